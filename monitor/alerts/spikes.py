"""kl_spike: a row's KL far above its recent robust level (docs/alerts.md, kl_spike).

Each row's log KL is compared with the median and MAD of the previous `window_rows` rows
(whole blocks, so a verdict never depends on where a refresh cut the data).
"""

from __future__ import annotations

import math

import numpy as np

from monitor.alerts.detector import LOG_FLOOR, Rows
from monitor.alerts.model import AlertLog
from monitor.alerts.thresholds import Thresholds
from monitor.episodes import BlockReference, Episodes, ForwardFill
from monitor.rules import AlertConfig, SpikeConfig

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample × this estimates its σ


class Spikes:
    """Per metric: the row's log value against the robust reference of the rows before."""

    def __init__(self, config: SpikeConfig, block_rows: int, reference_blocks: int) -> None:
        self.config = config
        self.columns = config.metrics
        self._fill = {m: ForwardFill() for m in config.metrics}
        self._reference = {
            m: BlockReference(block_rows, reference_blocks, config.min_reference_rows)
            for m in config.metrics
        }
        self._episodes = Episodes(1, config.clear_rows)

    def feed(self, rows: Rows, log: AlertLog) -> None:
        cfg = self.config
        min_log = max(math.log(cfg.min_ratio), 0.0)
        hits, ratios, medians = {}, {}, {}
        for m in cfg.metrics:
            value = rows.raw[m] / rows.per_token
            filled = self._fill[m](value)
            x = np.log(np.maximum(filled, LOG_FLOOR))
            med, mad = self._reference[m].feed(x)
            # The reference never drops below min_value: early in training KL rises from ~0,
            # and 0.01 against a median of 1e-8 is a ratio of a million but no spike.
            ref = np.maximum(med, math.log(cfg.min_value)) if cfg.min_value > 0 else med
            with np.errstate(invalid="ignore"):
                excess = x - ref
                hits[m] = (
                    np.isfinite(value)
                    & (excess > np.maximum(cfg.z * MAD_TO_SIGMA * mad, min_log))
                    & (value >= cfg.min_value)
                )
            ratios[m], medians[m] = np.exp(excess), np.exp(ref)
        cond = np.logical_or.reduce(list(hits.values()))
        for event in self._episodes.feed(cond, rows.steps):
            if event.kind == "end":
                log.close("kl_spike", event.step)
                continue
            i = event.index
            m = next(m for m in cfg.metrics if hits[m][i])
            value = float(rows.raw[m][i])
            step = int(rows.steps[i])
            reference = float(medians[m][i] * rows.per_token[i])  # back in the run's units
            log.open(
                "kl_spike",
                cfg.severity,
                step,
                m,
                value,
                f"{m} spiked to {value:.3g} at step {step}, {ratios[m][i]:.0f}× its "
                f"recent level {reference:.3g}: read this step's samples for a reward "
                "exploit, and if spikes recur lower the learning rate or clip harder.",
            )


def kl_spike(config: AlertConfig, _th: Thresholds) -> Spikes | None:
    sec = config.kl_spike
    if not sec.enabled or not sec.metrics:
        return None
    return Spikes(sec, config.block_rows, config.blocks(sec.window_rows))
