"""kl_nonfinite, metric_nonfinite: NaN or ±inf in KL (in the loss, gradient norm, reward or
entropy), flagged at its own step."""

from __future__ import annotations

import numpy as np

from monitor.alerts.config import AlertConfig, NonfiniteConfig
from monitor.alerts.detector import Rows
from monitor.alerts.episodes import Episodes
from monitor.alerts.model import AlertLog
from monitor.alerts.thresholds import Thresholds
from monitor.presets import KLWATCH_SERIES


class Nonfinite:
    """Every row judged; rows with a non-finite value within `clear_rows` are one episode."""

    def __init__(self, rule: str, config: NonfiniteConfig) -> None:
        self.rule, self.config = rule, config
        self.columns = config.metrics
        self._episodes = Episodes(1, config.clear_rows)

    def feed(self, rows: Rows, log: AlertLog) -> None:
        cfg = self.config
        # A series the run never logged reads as all-NaN: that is absence, not divergence.
        bad = {m: ~np.isfinite(rows.raw[m]) for m in cfg.metrics if m in rows.logged}
        _episodes_to_log(self.rule, cfg, self._episodes, bad, rows, log)


class LoggedNonfinite:
    """NaN or ±inf in series whose absence also reads as NaN.

    A table row is NaN for every series not logged at that step (a TensorBoard eval row, a
    record that leaves a key out, a series logged every 10 steps), so a lone NaN says
    nothing. ±inf counts at once; NaN counts where it lasts: `nan_rows` rows in a row, each
    beside another of klwatch's series with a value, after `dense_rows` such rows where the
    series had one (it was being logged). The alert's step is the row where the NaN has
    lasted `nan_rows` rows; it holds while the series stays non-finite.
    """

    def __init__(self, rule: str, config: NonfiniteConfig, nan_rows: int, dense_rows: int) -> None:
        self.rule, self.config = rule, config
        self.nan_rows, self.dense_rows = max(1, nan_rows), max(0, dense_rows)
        anchors = tuple(s for s in KLWATCH_SERIES if s not in config.metrics)
        self.columns = config.metrics + anchors
        self._episodes = Episodes(1, config.clear_rows)
        keep = self.nan_rows + self.dense_rows
        # per metric: finite flags and steps of its last `keep` anchored rows
        self._carry = {m: (np.ones(0, bool), np.zeros(0, np.int64)) for m in config.metrics}
        self._keep = keep

    def feed(self, rows: Rows, log: AlertLog) -> None:
        cfg = self.config
        finite = {c: np.isfinite(rows.raw[c]) for c in self.columns if c in rows.logged}
        nothing = np.zeros(rows.steps.size, bool)
        bad, hold = {}, {}
        for m in cfg.metrics:
            if m not in rows.logged:
                continue
            anchored = np.logical_or.reduce([f for c, f in finite.items() if c != m] or [nothing])
            lasting = self._lasting_nan(m, finite[m], anchored, rows.steps)
            bad[m] = np.isinf(rows.raw[m]) | lasting
            hold[m] = ~finite[m] & anchored
        if not bad:
            return
        held = np.logical_or.reduce(list(hold.values()))
        _episodes_to_log(self.rule, cfg, self._episodes, bad, rows, log, held)

    def _lasting_nan(
        self, m: str, finite: np.ndarray, anchored: np.ndarray, steps: np.ndarray
    ) -> np.ndarray:
        """Per row: the last of `nan_rows` anchored NaN rows in a row, after `dense_rows`
        anchored rows with a value (judged over anchored rows only, carried across calls)."""
        out = np.zeros(finite.size, bool)
        where = np.flatnonzero(anchored)
        old_flags, old_steps = self._carry[m]
        flags = np.concatenate((old_flags, finite[where]))
        kept_steps = np.concatenate((old_steps, steps[where]))
        self._carry[m] = (flags[-self._keep :].copy(), kept_steps[-self._keep :].copy())
        if flags.all():
            return out
        index = np.arange(flags.size)
        last_ok = np.maximum.accumulate(np.where(flags, index, -1))
        run = index - last_ok  # NaN rows in a row ending here (0 on a row with a value)
        ok_count = np.concatenate(([0], np.cumsum(flags)))
        begin = last_ok + 1 - self.dense_rows  # the dense stretch before the run
        dense = (begin >= 0) & (
            ok_count[last_ok + 1] - ok_count[np.maximum(begin, 0)] == self.dense_rows
        )
        # only rows of this batch, and only the row where the run reaches nan_rows
        fires = (run == self.nan_rows) & dense
        fires = fires[old_flags.size :]
        out[where[fires]] = True
        return out


def _episodes_to_log(
    rule: str,
    cfg: NonfiniteConfig,
    episodes: Episodes,
    bad: dict[str, np.ndarray],
    rows: Rows,
    log: AlertLog,
    hold: np.ndarray | None = None,
) -> None:
    if not bad:
        return
    cond = np.logical_or.reduce(list(bad.values()))
    for event in episodes.feed(cond, rows.steps, hold):
        if event.kind == "end":
            log.close(rule, event.step)
            continue
        metric = next(m for m in bad if bad[m][event.index])
        value = float(rows.raw[metric][event.index])
        log.open(
            rule,
            cfg.severity,
            event.step,
            metric,
            value,
            f"{metric} is {value} at step {event.step}: training has likely diverged — "
            "stop, restore the last good checkpoint and lower the learning rate (or look "
            "for fp16 overflow / a zero-probability token in the logprobs).",
        )


def kl_nonfinite(config: AlertConfig, _th: Thresholds) -> Nonfinite | None:
    sec = config.kl_nonfinite
    return Nonfinite("kl_nonfinite", sec) if sec.enabled else None


def metric_nonfinite(config: AlertConfig, _th: Thresholds) -> LoggedNonfinite | None:
    sec = config.metric_nonfinite
    if not sec.enabled:
        return None
    return LoggedNonfinite("metric_nonfinite", sec, nan_rows=3, dense_rows=5)
