"""kl_high, kl_low, kl_negative: block medians (means) of mean KL outside the healthy band
(below zero) for a sustained stretch."""

from __future__ import annotations

import numpy as np

from monitor.alerts.detector import BlockRule, Blocks, Verdict, sustained_episodes
from monitor.alerts.thresholds import Thresholds
from monitor.episodes import Event
from monitor.rules import AlertConfig


def kl_high(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    sec = config.kl_high
    if not sec.enabled:
        return None

    def judge(blocks: Blocks) -> Verdict:
        stats = blocks.stats
        with np.errstate(invalid="ignore"):
            return Verdict((stats["level"] > th.high) & (stats["step"] >= sec.warmup_steps))

    def message(event: Event, blocks: Blocks, _verdict: Verdict) -> str:
        level = blocks.stats["level"][event.index]
        return (
            f"Mean KL has stayed above the healthy band since step {event.step} ({level:.3g} > "
            f"{th.high:.3g}{th.unit}): the policy is drifting far from the reference — raise β "
            "or lower the learning rate, and read samples for reward hacking."
        )

    return BlockRule(
        "kl_high", sec.severity, "kl_mean", sustained_episodes(config, sec), judge, message
    )


def kl_low(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    sec = config.kl_low
    if not sec.enabled:
        return None

    def judge(blocks: Blocks) -> Verdict:
        stats = blocks.stats
        with np.errstate(invalid="ignore"):
            return Verdict((stats["level"] < th.low) & (stats["step"] >= sec.warmup_steps))

    def message(event: Event, blocks: Blocks, _verdict: Verdict) -> str:
        level = blocks.stats["level"][event.index]
        return (
            f"Mean KL has stayed below the healthy band since step {event.step} ({level:.3g} < "
            f"{th.low:.3g}{th.unit}): the policy is barely moving — β may be too strong or the "
            "learning rate too small."
        )

    return BlockRule(
        "kl_low", sec.severity, "kl_mean", sustained_episodes(config, sec), judge, message
    )


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
