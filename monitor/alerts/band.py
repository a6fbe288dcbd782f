"""kl_high, kl_low, kl_negative: block medians (means) of mean KL outside the healthy band
(below zero) for a sustained stretch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from monitor.alerts.detector import BlockRule, Blocks, Verdict, sustained_episodes
from monitor.alerts.thresholds import Thresholds
from monitor.episodes import Event
from monitor.rules import AlertConfig, LevelConfig


def kl_high(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    return _outside_band(
        "kl_high",
        config,
        config.kl_high,
        lambda level: level > th.high,
        lambda step, level: (
            f"Mean KL has stayed above the healthy band since step {step} ({level:.3g} > "
            f"{th.high:.3g}{th.unit}): the policy is drifting far from the reference — raise β "
            "or lower the learning rate, and read samples for reward hacking."
        ),
    )


def kl_low(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    return _outside_band(
        "kl_low",
        config,
        config.kl_low,
        lambda level: level < th.low,
        lambda step, level: (
            f"Mean KL has stayed below the healthy band since step {step} ({level:.3g} < "
            f"{th.low:.3g}{th.unit}): the policy is barely moving — β may be too strong or the "
            "learning rate too small."
        ),
    )


def _outside_band(
    rule: str,
    config: AlertConfig,
    sec: LevelConfig,
    outside: Callable[[np.ndarray], np.ndarray],
    sentence: Callable[[int, float], str],
) -> BlockRule | None:
    """kl_high / kl_low: block medians of mean KL on one side of the band, past the warm-up,
    for sec.sustain_rows; `sentence(step, level)` says so."""
    if not sec.enabled:
        return None

    def judge(blocks: Blocks) -> Verdict:
        stats = blocks.stats
        with np.errstate(invalid="ignore"):
            return Verdict(outside(stats["level"]) & (stats["step"] >= sec.warmup_steps))

    def message(event: Event, blocks: Blocks, _verdict: Verdict) -> str:
        return sentence(event.step, blocks.stats["level"][event.index])

    return BlockRule(rule, sec.severity, "kl_mean", sustained_episodes(config, sec), judge, message)


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
