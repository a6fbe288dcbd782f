"""Columnar storage of one run's series: append in O(new rows), resume-aware.

Rows are kept with `step` strictly ascending. A record whose step is at or below the last
step starts a new segment that supersedes the stored rows from that step on (resume from a
checkpoint), as TensorBoard does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from monitor.sources.parse import ParsedBlock

_MIN_CAPACITY = 1024


def surviving_rows(steps: np.ndarray) -> np.ndarray:
    """Mask of records not superseded by a later record with a step at or below theirs.

    Record i survives iff steps[i] < min(steps[i+1:]): vectorized, O(n).
    """
    if steps.size == 0:
        return np.zeros(0, dtype=bool)
    suffix_min = np.minimum.accumulate(steps[::-1])[::-1]
    keep = np.empty(steps.size, dtype=bool)
    keep[:-1] = steps[:-1] < suffix_min[1:]
    keep[-1] = True
    return keep


class SeriesTable:
    """Growable float64 columns plus an int64 step column (capacity doubles)."""

    def __init__(self) -> None:
        self.n = 0
        self._steps = np.empty(_MIN_CAPACITY, dtype=np.int64)
        self._columns: dict[str, np.ndarray] = {}
        # Bumped whenever stored rows are dropped or rewritten, so incremental consumers
        # (alert engines, caches) know to start over instead of reading a changed past.
        self.generation = 0
        self.superseded_rows = 0

    @property
    def steps(self) -> np.ndarray:
        return self._steps[: self.n]

    @property
    def names(self) -> list[str]:
        return list(self._columns)

    def column(self, name: str) -> np.ndarray:
        """A read-only view of one series; all-NaN if the run never logged it."""
        values = self._columns.get(name)
        return _read_only(values[: self.n] if values is not None else np.full(self.n, np.nan))

    def clear(self) -> None:
        generation = self.generation
        self.__init__()  # type: ignore[misc]
        self.generation = generation + 1

    def append(self, block: ParsedBlock) -> None:
        if block.n == 0:
            return
        keep = surviving_rows(block.steps)
        dropped_in_block = int(block.n - keep.sum())
        all_kept = dropped_in_block == 0  # the usual case: skip the masked copies
        new_steps = block.steps if all_kept else block.steps[keep]
        start = int(np.searchsorted(self.steps, new_steps[0], side="left"))
        if start < self.n:
            self._truncate(start)
        self.superseded_rows += dropped_in_block
        count = new_steps.size
        self._reserve(self.n + count)
        end = self.n + count
        self._steps[self.n : end] = new_steps
        for name, values in block.columns.items():
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = np.full(self._steps.size, np.nan)
            column[self.n : end] = values if all_kept else values[keep]
        for name, column in self._columns.items():
            if name not in block.columns:
                column[self.n : end] = np.nan
        self.n = end

    def _truncate(self, start: int) -> None:
        # Copy rather than overwrite in place: views handed out earlier must not change.
        self.superseded_rows += self.n - start
        self._steps = self._steps.copy()
        self._columns = {name: column.copy() for name, column in self._columns.items()}
        self.n = start
        self.generation += 1

    def _reserve(self, rows: int) -> None:
        capacity = self._steps.size
        if rows <= capacity:
            return
        while capacity < rows:
            capacity *= 2
        self._steps = _grow(self._steps, capacity, 0)
        self._columns = {n: _grow(c, capacity, np.nan) for n, c in self._columns.items()}

    def nbytes(self) -> int:
        return self._steps.nbytes + sum(c.nbytes for c in self._columns.values())


def _grow(array: np.ndarray, capacity: int, fill: float) -> np.ndarray:
    grown = np.full(capacity, fill, dtype=array.dtype)
    grown[: array.size] = array
    return grown


@dataclass(frozen=True)
class SeriesData:
    """Steps and series of one run version, under klwatch's names where a preset mapped
    them (kl_mean, beta, …), else under the trainer's own."""

    steps: np.ndarray
    columns: Mapping[str, np.ndarray]  # in display order: klwatch series, then raw ones

    @classmethod
    def of(cls, steps: np.ndarray, columns: Mapping[str, np.ndarray]) -> SeriesData:
        """Frozen copy-free views, trimmed to one length."""
        n = min([steps.size, *(c.size for c in columns.values())])
        frozen = {name: _read_only(values[:n]) for name, values in columns.items()}
        return cls(_read_only(steps[:n]), MappingProxyType(frozen))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    @property
    def n_rows(self) -> int:
        return int(self.steps.size)

    @property
    def last_step(self) -> int | None:
        return int(self.steps[-1]) if self.steps.size else None

    def column(self, name: str) -> np.ndarray:
        """One series; all-NaN when the run never logged it."""
        found = self.columns.get(name)
        return found if found is not None else np.full(self.n_rows, np.nan)

    def frame(self) -> pd.DataFrame:
        """One row per step, one column per series (a copy: for downloads, not for charts)."""
        copies = {name: values.copy() for name, values in self.columns.items()}
        return pd.DataFrame({"step": self.steps.copy(), **copies})


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
