"""Evidence that accumulates: one-sided CUSUMs that raise an alert sooner the further a
series is from its limit, and clear it once the evidence turns the other way.

A level rule asks "has this series been past its limit, for long enough to be sure?". A fixed
wait ("200 rows above the band") answers too late when the level is far off and too soon when
it hovers near the edge. Page's CUSUM (Page 1954, "Continuous inspection schemes") answers it
with a running sum of per-row evidence z_t (for a level: log(value / limit) − margin):

    s_t = max(0, s_{t-1} + z_t),  alert when s_t ≥ evidence.

A value 5× over the limit adds log 5 − margin per row and crosses within a few dozen rows; a
value 1.5× over takes a few hundred; noise around the limit drifts down by `margin` per row and
never crosses. The alert's step is where the crossing excursion began (the last row the sum
was at 0). While an alert is open a second CUSUM gathers the opposite evidence and clears it.

Everything is vectorized per batch (s_t = C_t − min(0, min_{j≤t} C_j) over the cumulative sum
C) and carried across batches exactly, so verdicts do not depend on how rows were split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.alerts.detector import LOG_FLOOR, Rows
from monitor.alerts.model import AlertLog


class Cusum:
    """s_t = max(0, s_{t-1} + z_t), carried across batches, and where its excursion began."""

    def __init__(self) -> None:
        self.s = 0.0
        self.start_step: int | None = None  # first step of the current excursion (s > 0)

    def reset(self) -> None:
        self.s, self.start_step = 0.0, None

    def run(self, z: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sums after each row of `z` (non-finite z counts as 0) and, per row, the first
        step of the excursion the sum is in (-1 where the sum is 0). Updates the state."""
        if z.size == 0:
            return np.empty(0), np.empty(0, np.int64)
        z = np.where(np.isfinite(z), z, 0.0)
        c = self.s + np.cumsum(z)
        s = c - np.minimum(np.minimum.accumulate(c), 0.0)
        index = np.arange(z.size)
        last_zero = np.maximum.accumulate(np.where(s == 0.0, index, -1))
        # Rows after the last zero began their excursion on the row after it; rows with no
        # zero in this batch continue the excursion carried in (or begin one at row 0).
        carried = self.start_step if self.start_step is not None else int(steps[0])
        after = np.minimum(last_zero + 1, z.size - 1)
        start = np.where(last_zero >= 0, steps[after], carried)
        start = np.where(s > 0, start, -1)
        self.s = float(s[-1])
        self.start_step = int(start[-1]) if s[-1] > 0 else None
        return s, start


@dataclass(frozen=True)
class Crossing:
    """An alert raised (or cleared) at batch index `index`; `step`: where the evidence began."""

    opened: bool
    index: int
    step: int


class EvidenceEpisodes:
    """Open an episode when the `on` evidence reaches `evidence`; clear it when the `off`
    evidence reaches `clear_evidence`. One Python iteration per crossing, not per row."""

    def __init__(self, evidence: float, clear_evidence: float) -> None:
        self.evidence, self.clear_evidence = evidence, clear_evidence
        self.active = False
        self._on, self._off = Cusum(), Cusum()

    def feed(self, z_on: np.ndarray, z_off: np.ndarray, steps: np.ndarray) -> list[Crossing]:
        crossings: list[Crossing] = []
        pos, n = 0, steps.size
        while pos < n:
            cusum, z, bar = (
                (self._off, z_off, self.clear_evidence)
                if self.active
                else (self._on, z_on, self.evidence)
            )
            s, start = cusum.run(z[pos:], steps[pos:])
            hit = np.flatnonzero(s >= bar)
            if hit.size == 0:
                break
            i = int(hit[0])
            step = int(start[i]) if start[i] >= 0 else int(steps[pos + i])
            crossings.append(Crossing(not self.active, pos + i, step))
            self.active = not self.active
            # The rows after the crossing start the other sum afresh; this one is spent.
            self._on.reset()
            self._off.reset()
            pos += i + 1
        return crossings


def log_excess(value: np.ndarray, limit: float, margin: float, cap: float) -> np.ndarray:
    """Per-row evidence that `value` is above `limit`: log(value / limit) − margin, each row
    capped at ±cap (one wild row is not a stretch); NaN where the value is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.log(np.maximum(value, LOG_FLOOR) / limit)
    return np.where(np.isnan(value), np.nan, np.clip(ratio, -cap, cap) - margin)


def bernoulli_llr(share: np.ndarray, normal: float, bad: float) -> np.ndarray:
    """Per-row evidence that a share (0–1) runs at `bad` rather than `normal`: the log-
    likelihood ratio of one Bernoulli draw with that mean. It is positive above the
    break-even share log((1−normal)/(1−bad)) / log(bad(1−normal) / (normal(1−bad))), so a
    share that sits at 1 gathers log(bad/normal) per row and a normal one loses fast."""
    up, down = math.log(bad / normal), math.log((1 - bad) / (1 - normal))
    clipped = np.clip(share, 0.0, 1.0)
    return clipped * up + (1 - clipped) * down


# (rows) -> per-row evidence for and against, NaN where a row says nothing
Judge = Callable[[Rows], tuple[np.ndarray, np.ndarray]]
# (step, batch index, rows) -> the alert's (metric, value, sentence)
Describe = Callable[[int, int, Rows], tuple[str, float, str]]


class EvidenceRule:
    """A row detector whose episodes open and clear on accumulated evidence."""

    def __init__(
        self,
        rule: str,
        severity: str,
        columns: tuple[str, ...],
        episodes: EvidenceEpisodes,
        judge: Judge,
        describe: Describe,
    ) -> None:
        self.rule, self.severity, self.columns = rule, severity, columns
        self._episodes, self._judge, self._describe = episodes, judge, describe

    def feed(self, rows: Rows, log: AlertLog) -> None:
        if not any(c in rows.logged for c in self.columns):
            return  # absence is said on the page, never judged
        z_on, z_off = self._judge(rows)
        for crossing in self._episodes.feed(z_on, z_off, rows.steps):
            if not crossing.opened:
                log.close(self.rule, crossing.step)
                continue
            metric, value, sentence = self._describe(crossing.step, crossing.index, rows)
            log.open(self.rule, self.severity, crossing.step, metric, value, sentence)


class EarlyLevel:
    """The median of a series' first `rows` finite values: its own early level, once known."""

    def __init__(self, rows: int) -> None:
        self.rows = max(1, rows)
        self._seen: list[float] = []
        self.value: float | None = None

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Per row: the early level if it was known before that row (NaN otherwise)."""
        out = np.full(x.size, np.nan)
        if self.value is not None:
            out[:] = self.value
            return out
        finite = np.flatnonzero(np.isfinite(x))
        need = self.rows - len(self._seen)
        taken = finite[:need]
        self._seen.extend(float(v) for v in x[taken])
        if len(self._seen) >= self.rows:
            self.value = float(np.median(self._seen))
            out[int(taken[-1]) + 1 :] = self.value
        return out
