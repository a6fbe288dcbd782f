"""kl_nonfinite: NaN or ±inf in the KL series, flagged at its own step."""

from __future__ import annotations

import numpy as np

from monitor.alerts.detector import Rows
from monitor.alerts.model import AlertLog
from monitor.alerts.thresholds import Thresholds
from monitor.episodes import Episodes
from monitor.rules import AlertConfig, NonfiniteConfig


class Nonfinite:
    """Every row judged; rows with a non-finite value within `clear_rows` are one episode."""

    def __init__(self, config: NonfiniteConfig) -> None:
        self.config = config
        self.columns = config.metrics
        self._episodes = Episodes(1, config.clear_rows)

    def feed(self, rows: Rows, log: AlertLog) -> None:
        cfg = self.config
        # A series the run never logged reads as all-NaN: that is absence, not divergence.
        bad = {m: ~np.isfinite(rows.raw[m]) for m in cfg.metrics if m in rows.logged}
        cond = np.logical_or.reduce(list(bad.values())) if bad else np.zeros(rows.steps.size, bool)
        for event in self._episodes.feed(cond, rows.steps):
            if event.kind == "end":
                log.close("kl_nonfinite", event.step)
                continue
            metric = next(m for m in cfg.metrics if bad[m][event.index])
            value = float(rows.raw[metric][event.index])
            log.open(
                "kl_nonfinite",
                cfg.severity,
                event.step,
                metric,
                value,
                f"{metric} is {value} at step {event.step}: training has likely diverged — "
                "stop, restore the last good checkpoint and lower the learning rate (or look "
                "for fp16 overflow / a zero-probability token in the logprobs).",
            )


def kl_nonfinite(config: AlertConfig, _th: Thresholds) -> Nonfinite | None:
    return Nonfinite(config.kl_nonfinite) if config.kl_nonfinite.enabled else None
