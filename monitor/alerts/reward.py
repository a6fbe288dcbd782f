"""reward_hacking: reward rising while KL rises much faster, above the band."""

from __future__ import annotations

import numpy as np

from monitor.alerts.config import AlertConfig
from monitor.alerts.detector import BlockRule, Blocks, Verdict, sustained_episodes
from monitor.alerts.episodes import Event, Tail, trailing_median
from monitor.alerts.thresholds import Thresholds


def reward_hacking(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    """The median of the last `segment_rows` against the segment before, per block."""
    sec = config.reward_hacking
    if not sec.enabled:
        return None
    h = config.blocks(sec.segment_rows)
    # Two segments of block medians behind the newest block.
    history = {name: Tail(2 * h) for name in ("level", "reward")}

    def judge(blocks: Blocks) -> Verdict:
        n = blocks.n
        level = history["level"].extend(blocks.stats["level"])
        reward = history["reward"].extend(blocks.stats["reward"])
        kl, r = trailing_median(level, n + h, h), trailing_median(reward, n + h, h)
        kl_early, kl_late = kl[:n], kl[h:]
        r_early, r_late = r[:n], r[h:]
        with np.errstate(invalid="ignore", divide="ignore"):
            kl_rise = kl_late / kl_early - 1.0
            r_rise = (r_late - r_early) / np.maximum(np.abs(r_early), 1e-12)
            on = (
                (kl_early > 0)
                & (kl_late > th.growth_level)
                & (kl_rise >= sec.min_kl_rise)
                & (r_rise >= sec.min_reward_rise)
                & (kl_rise >= sec.kl_vs_reward * r_rise)
            )
        return Verdict(on, {"kl_rise": kl_rise, "r_rise": r_rise, "kl": kl_late})

    def message(event: Event, _blocks: Blocks, verdict: Verdict) -> str:
        i, v = event.index, verdict.values
        return (
            f"Reward rose {v['r_rise'][i]:.0%} while mean KL rose {v['kl_rise'][i]:.0%} over the "
            f"last {h * config.block_rows} rows (KL {v['kl'][i]:.3g}{th.unit}, since step "
            f"{event.step}): the policy may be exploiting the reward model — read recent "
            "samples, and consider raising β or stopping at an earlier checkpoint."
        )

    return BlockRule(
        "reward_hacking",
        sec.severity,
        "kl_mean",
        sustained_episodes(config, sec),
        judge,
        message,
    )
