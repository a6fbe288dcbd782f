"""Streaming building blocks of the alert engine: episodes, forward fill, trailing medians.

Everything here is fed numpy batches and keeps just enough state that feeding a series in
pieces gives exactly what feeding it at once gives (the engine's batch-split invariance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Event:
    """An episode began (`kind="start"`, detected at batch index `index`) or cleared."""

    kind: str  # "start" | "end"
    step: int  # first step of the stretch that started / cleared the episode
    index: int  # batch index where the start was decided (-1 for ends)


class Episodes:
    """Turns per-unit conditions into episodes with hysteresis.

    An episode starts once `on` has held for `on_units` consecutive units (its step is the
    first of them) and clears once `hold` (default: `on`; a weaker condition keeps a noisy
    episode from flickering) has failed for `off_units` consecutive units. Where `quick`
    (a stronger form of `on` that carries its own evidence) holds, the episode starts at once
    without waiting for `on_units`. The Python loop runs once per change of the conditions,
    not per unit; unfinished stretches carry over.
    """

    def __init__(self, on_units: int, off_units: int) -> None:
        self.on_units = max(1, on_units)
        self.off_units = max(1, off_units)
        self.active = False
        self._on_len = 0  # consecutive units with `on` true, ending at the last unit fed
        self._on_step = 0
        self._off_len = 0  # consecutive units with `hold` false
        self._off_step = 0

    def feed(
        self,
        on: np.ndarray,
        steps: np.ndarray,
        hold: np.ndarray | None = None,
        quick: np.ndarray | None = None,
    ) -> list[Event]:
        events: list[Event] = []
        n = on.size
        if n == 0:
            return events
        on = on if quick is None else (on | quick)
        hold = on if hold is None else (hold | on)
        # 0 neither, 1 hold only, 2 on, 3 on and quick
        code = on.astype(np.int8) + hold.astype(np.int8)
        if quick is not None:
            code += quick.astype(np.int8)
        starts = np.concatenate(([0], np.flatnonzero(code[1:] != code[:-1]) + 1)).tolist()
        for s, e in zip(starts, [*starts[1:], n], strict=True):
            c = int(code[s])
            if c >= 2:
                if not self._on_len:
                    self._on_step = int(steps[s])
                need = self.on_units - self._on_len
                self._on_len += e - s
                if not self.active and (c == 3 or self._on_len >= self.on_units):
                    index = s if c == 3 else s + max(0, need - 1)
                    events.append(Event("start", self._on_step, index))
                    self.active = True
            else:
                self._on_len = 0
            if c == 0:
                if not self._off_len:
                    self._off_step = int(steps[s])
                self._off_len += e - s
                if self.active and self._off_len >= self.off_units:
                    events.append(Event("end", self._off_step, -1))
                    self.active = False
            else:
                self._off_len = 0
        return events


class ForwardFill:
    """Replace non-finite values by the last finite one seen (NaN before any)."""

    def __init__(self) -> None:
        self.last = np.nan

    def __call__(self, values: np.ndarray) -> np.ndarray:
        finite = np.isfinite(values)
        if finite.all():
            if values.size:
                self.last = float(values[-1])
            return values
        padded = np.concatenate(([self.last], values))
        ok = np.concatenate(([True], finite))
        index = np.where(ok, np.arange(padded.size), 0)
        np.maximum.accumulate(index, out=index)
        filled = padded[index][1:]
        if filled.size:
            self.last = float(filled[-1])
        return filled


class Tail:
    """The last `keep` values of a growing series, for windows that reach back."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.values = np.empty(0)

    def extend(self, new: np.ndarray) -> np.ndarray:
        """Return history + new (history first), and remember its last `keep` values."""
        joined = np.concatenate((self.values, new)) if self.values.size else np.asarray(new)
        self.values = joined[-self.keep :].copy() if self.keep else np.empty(0)
        return joined


def trailing_mean(joined: np.ndarray, n_new: int, window: int) -> np.ndarray:
    """Mean of the `window` values ending at each of the last `n_new` positions of `joined`
    (NaN without a full window). Exact per window, so it cannot drift with batch splits."""
    out = np.full(n_new, np.nan)
    first = joined.size - n_new
    lo = max(first, window - 1)
    if lo < joined.size:
        windows = sliding_window_view(joined[lo - window + 1 :], window)
        out[lo - first :] = windows.mean(axis=1)
    return out


def trailing_median(joined: np.ndarray, n_new: int, window: int) -> np.ndarray:
    """Median of the `window` values ending at each of the last `n_new` positions of
    `joined` (positions before its start count as missing); NaN without a full window."""
    out = np.full(n_new, np.nan)
    first = joined.size - n_new  # position of the first output (may be < 0)
    lo = max(first, window - 1)
    if lo >= joined.size:
        return out
    windows = sliding_window_view(joined[lo - window + 1 :], window)
    out[lo - first :] = np.median(windows, axis=1)
    return out


class BlockReference:
    """Robust level of a row series: median and MAD of the previous `k` whole blocks.

    Row i of block b = i // block is judged against rows [(b-k)·block, b·block) — rows
    strictly before its block, so the verdict on a row never depends on batch boundaries,
    and the window moves once per block (medians cost O(k·block) per block, i.e. O(k)
    amortized per row, vectorized over all blocks a batch touches).
    """

    CHUNK_BLOCKS = 1024  # bounds the temporary window matrix (~2 MB per 250-row window)

    def __init__(self, block: int, k: int, min_rows: int) -> None:
        self.block, self.k, self.min_rows = block, k, min_rows
        self.rows = 0  # rows fed so far
        self._tail = np.empty(0)  # rows from self._tail_start on
        self._tail_start = 0

    def feed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (median, MAD) of the reference of each new row (NaN: no reference)."""
        n, b, row0 = x.size, self.block, self.rows
        joined = np.concatenate((self._tail, x))
        base = self._tail_start
        first_block, last_block = row0 // b, (row0 + n - 1) // b
        n_blocks = last_block - first_block + 1
        med = np.full(n_blocks, np.nan)
        mad = np.full(n_blocks, np.nan)
        for j in range(n_blocks):  # blocks with a short history: at most k per run
            blk = first_block + j
            if blk >= self.k:
                break
            if blk * b >= max(self.min_rows, 1):
                m, d = _median_mad(joined[: blk * b - base][None, :])
                med[j], mad[j] = m[0], d[0]
        full_from = max(first_block, self.k)
        if full_from <= last_block and self.k * b >= self.min_rows:
            lo = (full_from - self.k) * b - base
            matrix = joined[lo : last_block * b - base].reshape(-1, b)
            for c0 in range(0, last_block - full_from + 1, self.CHUNK_BLOCKS):
                c1 = min(c0 + self.CHUNK_BLOCKS, last_block - full_from + 1)
                windows = sliding_window_view(matrix[c0 : c1 + self.k - 1], self.k, axis=0)
                flat = windows.transpose(0, 2, 1).reshape(c1 - c0, self.k * b)
                j0 = full_from - first_block
                med[j0 + c0 : j0 + c1], mad[j0 + c0 : j0 + c1] = _median_mad(flat)
        self.rows = row0 + n
        keep_from = max(0, (self.rows // b - self.k) * b)
        self._tail = joined[keep_from - base :].copy()
        self._tail_start = keep_from
        per_row = (np.arange(row0, row0 + n) // b) - first_block
        return med[per_row], mad[per_row]


def _median_mad(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.median(windows, axis=1)
    mad = np.median(np.abs(windows - med[:, None]), axis=1)
    return med, mad
