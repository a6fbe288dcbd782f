"""Row-at-a-time sources (trackio rows, trainer_state.json entries) → ParsedBlock.

Trainers that log through a callback often write one global step in several calls: the
Trainer logs the train metrics and, at the same global step, the eval metrics; the final
summary (train_runtime, …) comes at the last step again. Those are one step, not a resume,
so consecutive rows with the same step are merged (a later value wins unless it is NaN). A
step that repeats across two `read()`s is emitted again with the merged values: the table
supersedes the row it had for that step with the fuller one.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.sources.parse import MAX_STEP, ParsedBlock
from monitor.text import utf8_text

Row = dict[str, float]


class RowMerger:
    """Collects (step, values) rows in order; `take()` hands over those added since."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._rows: list[Row] = []
        self.last: tuple[int, Row] | None = None  # the newest row, kept across take()s

    def add(self, step: int, values: Row) -> None:
        if self.last is not None and self.last[0] == step:
            values = merge_rows(self.last[1], values)
            if self._steps and self._steps[-1] == step:
                self._rows[-1] = values
                self.last = (step, values)
                return
        self._steps.append(step)
        self._rows.append(values)
        self.last = (step, values)

    def take(self) -> ParsedBlock | None:
        """The rows added since the previous take, as columns (None if there were none)."""
        if not self._steps:
            return None
        n = len(self._steps)
        lists: dict[str, list[float]] = {}  # list stores are cheaper than numpy's per item
        for i, row in enumerate(self._rows):
            for name, value in row.items():
                column = lists.get(name)
                if column is None:
                    column = lists[name] = [math.nan] * n
                column[i] = value
        columns = {
            utf8_text(name): np.array(values, dtype=np.float64) for name, values in lists.items()
        }
        block = ParsedBlock(np.asarray(self._steps, dtype=np.int64), columns)
        self._steps, self._rows = [], []
        return block

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def merge_rows(earlier: Row, later: Row) -> Row:
    """Two rows of one step as one: a later value wins unless it is NaN (missing)."""
    merged = dict(earlier)
    for name, value in later.items():
        if value == value or name not in merged:  # value == value: not NaN
            merged[name] = value
    return merged


def merge_equal_steps(
    steps: np.ndarray, columns: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`merge_rows` over runs of equal consecutive steps, vectorized: per run of rows and
    column, the last value that is not NaN."""
    starts = np.flatnonzero(np.r_[True, steps[1:] != steps[:-1]])
    if starts.size == steps.size:
        return steps, columns
    positions = np.arange(steps.size)
    merged = {}
    for name, values in columns.items():
        last = np.maximum.reduceat(np.where(np.isnan(values), -1, positions), starts)
        merged[name] = np.where(last >= 0, values[np.maximum(last, 0)], np.nan)
    return steps[starts], merged


def numbers(record: dict[str, object]) -> Row:
    """The numeric values of a record (see `as_number`), by name."""
    row: Row = {}
    for name, value in record.items():
        kind = type(value)
        if kind is float:  # the common cases first: this runs once per value
            row[name] = value  # type: ignore[assignment]
        elif kind is int and -_FLOAT_INT_LIMIT < value < _FLOAT_INT_LIMIT:  # type: ignore[operator]
            row[name] = float(value)  # type: ignore[arg-type]
        else:
            number = as_number(value)
            if number is not None:
                row[name] = number
    return row


def as_number(value: object) -> float | None:
    """A metric value as float, or None if it is not a number (strings, lists, dicts, bools).

    null reads as NaN (a missing value), like the JSONL parser; trackio stores NaN and
    ±Infinity as the strings "NaN", "Infinity", "-Infinity".
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range: ±Infinity, as for 1e999
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return _SPECIAL_FLOATS.get(value)
    return None


_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT_INT_LIMIT = 1 << 1023  # integers this large or larger go through as_number's check


def as_step(value: object) -> int | None:
    """An integer step in 0..2**63-1 (an integral float such as 10.0 counts), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_STEP else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_STEP:
        return int(value)
    return None
