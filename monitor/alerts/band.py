"""kl_high, kl_low: mean KL outside the healthy band, on evidence that accumulates faster the
further out it is; kl_negative: block means of mean KL below zero for a sustained stretch."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from monitor.alerts.config import AlertConfig, LevelConfig
from monitor.alerts.detector import BlockRule, Blocks, Rows, Verdict, sustained_episodes
from monitor.alerts.episodes import Event
from monitor.alerts.evidence import EvidenceEpisodes, EvidenceRule, log_excess
from monitor.alerts.thresholds import Thresholds


def kl_high(config: AlertConfig, th: Thresholds) -> EvidenceRule | None:
    return _outside_band(
        "kl_high",
        config.kl_high,
        th.high,
        above=True,
        sentence=lambda step, level: (
            f"Mean KL has been above the healthy band since step {step} ({level:.3g} > "
            f"{th.high:.3g}{th.unit}): the policy is drifting far from the reference — raise β "
            "or lower the learning rate, and read samples for reward hacking."
        ),
    )


def kl_low(config: AlertConfig, th: Thresholds) -> EvidenceRule | None:
    return _outside_band(
        "kl_low",
        config.kl_low,
        th.low,
        above=False,
        sentence=lambda step, level: (
            f"Mean KL has been below the healthy band since step {step} ({level:.3g} < "
            f"{th.low:.3g}{th.unit}): the policy is barely moving — β may be too strong or the "
            "learning rate too small."
        ),
    )


def _outside_band(
    rule: str,
    sec: LevelConfig,
    edge: float,
    *,
    above: bool,
    sentence: Callable[[int, float], str],
) -> EvidenceRule | None:
    """kl_high / kl_low: per-token mean KL on one side of the band's `edge`, past the warm-up,
    on evidence that grows with the distance (monitor/alerts/evidence.py)."""
    if not sec.enabled or not math.isfinite(edge) or edge <= 0:
        return None  # the band is off for this run (per-sequence KL, no length)

    def judge(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        level = rows.raw["kl_mean"] / rows.per_token
        # log(level / edge), each row capped: positive above the edge, negative below
        log_ratio = log_excess(level, edge, 0.0, sec.max_log_step)
        outside = log_ratio if above else -log_ratio
        outward, inward = outside - sec.margin, -outside
        warming = rows.steps < sec.warmup_steps
        # During the warm-up no evidence builds up: each row resets the sum.
        outward = np.where(warming, -(sec.evidence + sec.max_log_step), outward)
        return outward, inward

    def describe(step: int, i: int, rows: Rows) -> tuple[str, float, str]:
        value = float(rows.raw["kl_mean"][i])
        return "kl_mean", value, sentence(step, value / float(rows.per_token[i]))

    episodes = EvidenceEpisodes(sec.evidence, sec.clear_evidence)
    return EvidenceRule(rule, sec.severity, ("kl_mean",), episodes, judge, describe)


def kl_negative(config: AlertConfig, _th: Thresholds) -> BlockRule | None:
    sec = config.kl_negative
    if not sec.enabled:
        return None

    def judge(blocks: Blocks) -> Verdict:
        mean, sem = blocks.stats["mean"], blocks.stats["sem"]
        with np.errstate(invalid="ignore", divide="ignore"):
            # sem == 0 (a constant negative estimate) is as significant as it gets.
            significant = np.where(sem > 0, mean / np.where(sem > 0, sem, 1.0) < -sec.t, True)
            return Verdict((mean < 0) & significant)

    def message(event: Event, blocks: Blocks, _verdict: Verdict) -> str:
        return (
            f"The mean KL estimate has been below zero since step {event.step} "
            f"({blocks.stats['mean'][event.index]:.3g}): sampling and scoring disagree — check "
            "generation settings (temperature, top-k/p), dropout left on, and padding or "
            "masking of the logprobs."
        )

    return BlockRule(
        "kl_negative", sec.severity, "kl_mean", sustained_episodes(config, sec), judge, message
    )
