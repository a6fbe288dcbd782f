"""beta_saturated: an adaptive controller's β pinned at a bound while KL is off target."""

from __future__ import annotations

import numpy as np

from monitor.alerts.config import AlertConfig
from monitor.alerts.detector import BlockRule, Blocks, Verdict, sustained_episodes
from monitor.alerts.episodes import Event
from monitor.alerts.thresholds import Thresholds


def beta_saturated(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    sec = config.beta_saturated
    if not sec.enabled or th.beta_bounds is None:  # only controllers that clamp β
        return None
    lo_bound, hi_bound = th.beta_bounds
    too_high = th.target * sec.off_target_ratio if th.target else th.high
    too_low = th.target / sec.off_target_ratio if th.target else th.low

    def at_bound(beta: np.ndarray | float, bound: float) -> np.ndarray | bool:
        return np.abs(beta - bound) <= sec.relative_tolerance * bound

    def judge(blocks: Blocks) -> Verdict:
        beta, level = blocks.stats["beta"], blocks.stats["level"]
        with np.errstate(invalid="ignore"):
            high = at_bound(beta, hi_bound) & (level > too_high)
            low = at_bound(beta, lo_bound) & (level < too_low)
            return Verdict(high | low)

    def message(event: Event, blocks: Blocks, _verdict: Verdict) -> str:
        beta = blocks.stats["beta"][event.index]
        level = blocks.stats["level"][event.index]
        if at_bound(beta, hi_bound):
            return (
                f"β has been pinned at its upper bound {beta:.3g} since step {event.step} while "
                f"mean KL ({level:.3g}) is still above target: the controller cannot pull KL "
                "back — raise beta_max or lower the learning rate."
            )
        return (
            f"β has been pinned at its lower bound {beta:.3g} since step {event.step} while mean"
            f" KL ({level:.3g}) is still below target: the controller cannot let the policy "
            "move — lower beta_min or the target KL, or raise the learning rate."
        )

    return BlockRule(
        "beta_saturated",
        sec.severity,
        "beta",
        sustained_episodes(config, sec),
        judge,
        message,
        value_key="beta",
    )
