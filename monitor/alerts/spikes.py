"""kl_spike, grad_spike: a row's KL (gradient norm) far above its recent robust level
(docs/alerts.md).

Each row's log value is compared with the median and MAD of the previous `window_rows` rows
(whole blocks, so a verdict never depends on where a refresh cut the data).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.alerts.config import AlertConfig, GradSpikeConfig, SpikeConfig
from monitor.alerts.detector import LOG_FLOOR, Rows
from monitor.alerts.episodes import BlockReference, Episodes, ForwardFill
from monitor.alerts.model import AlertLog
from monitor.alerts.thresholds import Thresholds

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample × this estimates its σ


@dataclass(frozen=True)
class SpikeSpec:
    """What one spike rule judges and how it words it."""

    rule: str
    per_token: bool  # KL: divide by the per-token divisor; a gradient norm is unitless
    positive_only: bool  # values ≤ 0 are no level (a gradient of exactly 0: no_learning_signal)
    # (metric, value, step, ratio, reference) -> the sentence
    sentence: Callable[[str, float, int, float, float], str]


class Spikes:
    """Per metric: the row's log value against the robust reference of the rows before."""

    def __init__(
        self,
        spec: SpikeSpec,
        config: SpikeConfig | GradSpikeConfig,
        block_rows: int,
        reference_blocks: int,
    ) -> None:
        self.spec = spec
        self.config = config
        self.columns = config.metrics
        self._fill = {m: ForwardFill() for m in config.metrics}
        self._reference = {
            m: BlockReference(block_rows, reference_blocks, config.min_reference_rows)
            for m in config.metrics
        }
        self._episodes = Episodes(1, config.clear_rows)
        # the last `recent_rows` log values of each metric, for the jump test (NaN: none yet)
        recent = config.recent_rows
        self._recent = {m: np.full(recent, np.nan) for m in config.metrics} if recent else {}

    def _recent_median(self, m: str, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For the batch rows `rows`: the median of the `recent_rows` log values before each
        (NaN until known). Only candidates ask, so the cost is not per row."""
        tail = self._recent[m]
        joined = np.concatenate((tail, x))
        self._recent[m] = joined[-tail.size :].copy()
        if rows.size == 0:
            return np.empty(0)
        windows = joined[rows[:, None] + np.arange(tail.size)]
        return np.median(windows, axis=1)

    def feed(self, rows: Rows, log: AlertLog) -> None:
        cfg = self.config
        min_log = max(math.log(cfg.min_ratio), 0.0)
        hits, ratios, medians = {}, {}, {}
        min_value = cfg.min_value
        for m in cfg.metrics:
            value = rows.raw[m] / rows.per_token if self.spec.per_token else rows.raw[m]
            if self.spec.positive_only:
                value = np.where(value > 0, value, np.nan)
            filled = self._fill[m](value)
            x = np.log(np.maximum(filled, LOG_FLOOR))
            med, mad = self._reference[m].feed(x)
            # The reference never drops below min_value: early in training KL rises from ~0,
            # and 0.01 against a median of 1e-8 is a ratio of a million but no spike.
            ref = np.maximum(med, math.log(min_value)) if min_value > 0 else med
            with np.errstate(invalid="ignore"):
                excess = x - ref
                hits[m] = (
                    np.isfinite(value)
                    & (excess > np.maximum(cfg.z * MAD_TO_SIGMA * mad, min_log))
                    & (value >= min_value)
                )
            if self._recent:
                # A jump, not a climb: also far above the last few rows (a level that rose
                # over tens of steps has its recent rows as high; the reference lags it).
                candidates = np.flatnonzero(hits[m])
                jump = x[candidates] - self._recent_median(m, x, candidates)
                with np.errstate(invalid="ignore"):
                    hits[m][candidates] = jump > math.log(cfg.min_jump)
            ratios[m], medians[m] = np.exp(excess), np.exp(ref)
        cond = np.logical_or.reduce(list(hits.values()))
        for event in self._episodes.feed(cond, rows.steps):
            if event.kind == "end":
                log.close(self.spec.rule, event.step)
                continue
            i = event.index
            m = next(m for m in cfg.metrics if hits[m][i])
            value = float(rows.raw[m][i])
            step = int(rows.steps[i])
            reference = float(medians[m][i])
            if self.spec.per_token:
                reference *= float(rows.per_token[i])  # back in the run's units
            sentence = self.spec.sentence(m, value, step, float(ratios[m][i]), reference)
            log.open(self.spec.rule, cfg.severity, step, m, value, sentence)


KL_SPIKE = SpikeSpec(
    "kl_spike",
    per_token=True,
    positive_only=False,
    sentence=lambda m, value, step, ratio, reference: (
        f"{m} spiked to {value:.3g} at step {step}, {ratio:.0f}× its recent level "
        f"{reference:.3g}: read this step's samples for a reward exploit, and if spikes recur "
        "lower the learning rate or clip harder."
    ),
)
GRAD_SPIKE = SpikeSpec(
    "grad_spike",
    per_token=False,
    positive_only=True,
    sentence=lambda m, value, step, ratio, reference: (
        f"The gradient norm ({m}) jumped to {value:.3g} at step {step}, {ratio:.0f}× its recent "
        f"level {reference:.3g}: gradient spikes often come just before a NaN — check that "
        "gradient clipping (max_grad_norm) is on, lower the learning rate, and read this "
        "step's samples."
    ),
)


def kl_spike(config: AlertConfig, _th: Thresholds) -> Spikes | None:
    sec = config.kl_spike
    if not sec.enabled or not sec.metrics:
        return None
    return Spikes(KL_SPIKE, sec, config.block_rows, config.blocks(sec.window_rows))


def grad_spike(config: AlertConfig, _th: Thresholds) -> Spikes | None:
    sec = config.grad_spike
    if not sec.enabled or not sec.metrics:
        return None
    return Spikes(GRAD_SPIKE, sec, config.block_rows, config.blocks(sec.window_rows))
