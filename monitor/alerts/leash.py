"""no_kl_penalty, kl_missing: facts about the run as a whole — nothing holds the policy near
its reference (β = 0), or klwatch cannot see the KL at all. Raised at the run's first step,
decided from what its KL means (monitor/presets.py) and the β values logged so far; cleared
when that changes (a KL series appears, β becomes > 0)."""

from __future__ import annotations

import math

import numpy as np

from monitor.alerts.config import AlertConfig, RunFactConfig
from monitor.alerts.detector import Rows
from monitor.alerts.model import AlertLog
from monitor.alerts.thresholds import Thresholds
from monitor.presets import KLMeaning


class Leash:
    """Raises `rule` while the run's leash problem is that one (they exclude each other)."""

    columns = ("beta",)

    def __init__(self, rule: str, config: RunFactConfig) -> None:
        self.rule = rule
        self.config = config
        self._first_step: int | None = None
        self._beta_count = 0  # finite β values seen…
        self._beta_largest = 0.0  # …and their largest magnitude

    def feed(self, rows: Rows, log: AlertLog) -> None:
        if self._first_step is None and rows.steps.size:
            self._first_step = int(rows.steps[0])
        beta = rows.raw["beta"]
        finite = beta[np.isfinite(beta)]
        if finite.size:
            self._beta_count += finite.size
            self._beta_largest = max(self._beta_largest, float(np.abs(finite).max()))
        if self._first_step is None or rows.meaning is None:
            return
        problem = leash_problem(rows.meaning, self._beta_count, self._beta_largest)
        message = problem[1] if problem is not None and problem[0] == self.rule else None
        if message is not None and not log.is_open(self.rule):
            metric, value = ("beta", 0.0) if self.rule == "no_kl_penalty" else ("kl_mean", math.nan)
            log.open(self.rule, self.config.severity, self._first_step, metric, value, message)
        elif message is None and log.is_open(self.rule):
            log.close(self.rule, int(rows.steps[-1]))


def leash_problem(m: KLMeaning, beta_count: int, beta_largest: float) -> tuple[str, str] | None:
    """(rule, message) of what is wrong with the run's leash, or None."""
    if m.beta == 0.0 or (m.beta_logged and beta_count and beta_largest == 0.0):
        where = "the config" if m.beta == 0.0 else "every logged β"
        return (
            "no_kl_penalty",
            f"β = 0 ({where}): this run has no KL penalty, nothing holds the policy near "
            "its reference — expect reward hacking; set β (e.g. TRL GRPO beta=0.04) if "
            "that is not intended.",
        )
    if m.kl_found:
        return None
    if m.kl_skipped_without_penalty and not m.beta:
        return (
            "no_kl_penalty",
            f"No KL is logged: {m.trainer} skips the KL term (and its logging) when β = 0, "
            "so this run most likely has no KL penalty — set beta > 0 to put a leash on "
            "the policy.",
        )
    looked = ", ".join(sorted(m.mapping)) or "none of klwatch's series"
    return (
        "kl_missing",
        f"No KL series found (preset {m.preset or 'none'}; found {looked}): klwatch cannot "
        "watch the leash of this run — pick the trainer with --preset or map the KL name "
        "in a preset file.",
    )


def no_kl_penalty(config: AlertConfig, _th: Thresholds) -> Leash | None:
    return Leash("no_kl_penalty", config.no_kl_penalty) if config.no_kl_penalty.enabled else None


def kl_missing(config: AlertConfig, _th: Thresholds) -> Leash | None:
    return Leash("kl_missing", config.kl_missing) if config.kl_missing.enabled else None
