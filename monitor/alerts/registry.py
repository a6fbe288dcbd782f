"""Every alert rule's detector, by rule id: the engine runs what is listed here.

A rule is listed under how it judges a run:

- `ROW_RULES`: fed every batch of new rows (`RowDetector`);
- `BLOCK_RULES`: fed the aligned blocks of `block_rows` rows a batch completes (`BlockRule`);
- `RUN_RULES`: asked whenever alerts are asked for, with the run as a whole and the wall
  clock (a stall, records klwatch cannot read, an override it cannot apply).

Row and block builders take the run's resolved config and thresholds and return the rule's
detector for that run, or None when the rule is off for it. Adding a rule: docs/alerts.md,
"Adding a rule". tests/test_architecture.py checks that these ids are exactly
`monitor.alerts.config.RULE_IDS`.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.alerts import (
    band,
    controller,
    growth,
    health,
    leash,
    nonfinite,
    reward,
    spikes,
    stall,
    unreadable,
)
from monitor.alerts.config import AlertConfig
from monitor.alerts.detector import BlockRule, RowDetector, RunFacts
from monitor.alerts.model import Alert
from monitor.alerts.thresholds import Thresholds

RowBuilder = Callable[[AlertConfig, Thresholds], RowDetector | None]
BlockBuilder = Callable[[AlertConfig, Thresholds], BlockRule | None]
# (the run's facts, now, the rule's last episode or None) -> its episode now
RunCheck = Callable[[RunFacts, float, Alert | None], Alert | None]

ROW_RULES: dict[str, RowBuilder] = {
    "kl_nonfinite": nonfinite.kl_nonfinite,
    "kl_spike": spikes.kl_spike,
    "no_kl_penalty": leash.no_kl_penalty,
    "kl_missing": leash.kl_missing,
    "kl_high": band.kl_high,
    "kl_low": band.kl_low,
    "entropy_collapse": health.entropy_collapse,
    "no_learning_signal": health.no_learning_signal,
    "completions_truncated": health.completions_truncated,
    "grad_spike": spikes.grad_spike,
    "rollout_mismatch": health.rollout_mismatch,
    "metric_nonfinite": nonfinite.metric_nonfinite,
}

BLOCK_RULES: dict[str, BlockBuilder] = {
    "kl_negative": band.kl_negative,
    "kl_growth": growth.kl_growth,
    "beta_saturated": controller.beta_saturated,
    "reward_hacking": reward.reward_hacking,
}

RUN_RULES: dict[str, RunCheck] = {
    "run_stalled": stall.run_stalled,
    "records_unreadable": unreadable.records_unreadable,
    "alert_config_invalid": unreadable.alert_config_invalid,
}


def registered_rules() -> list[str]:
    """Every rule id with a detector (each listed once across the three tables)."""
    return [*ROW_RULES, *BLOCK_RULES, *RUN_RULES]
