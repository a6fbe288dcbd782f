"""What both MLflow stores share: metric values in log order become one row per step, params
become the run's config, and MlflowSource is the reader both stores' readers extend.

Rows: one per step. The values of consecutive calls at one step are one row (the Trainer logs
its train and eval metrics of a global step in separate calls); a step below the previous one
starts a new segment, as everywhere in klwatch (a run resumed with MLFLOW_RUN_ID from an
earlier checkpoint). transformers' MLflowCallback logs the Trainer's raw names (`kl`,
`reward`, `completions/mean_length`, `eval_kl`, …) at `step=state.global_step`, after
replacing every character outside `[0-9A-Za-z_\\-. :/]` with "_" (none of TRL's names has
one); `time` is the newest timestamp of the row's values.
"""

from __future__ import annotations

import math
import os
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.sources.base import (
    MAX_PROBLEMS_PER_READ,
    RunLocation,
    Source,
    SourceRead,
)
from monitor.sources.parse import ParsedBlock, Problem
from monitor.text import utf8_text

FORMAT = "mlflow"
LABEL = "MLflow"
TIME_COLUMN = "time"
RESERVED_NAMES = frozenset({"step"})  # the row's own step, never a series
MAX_SERIES = 4096  # distinct metric names per run; a hostile store must not grow memory
MAX_PARAMS = 4096
MAX_PARAM_CHARS = 1000  # MLflow allows 6,000; a config value longer than this is cut
NAME_TAG = "mlflow.runName"
PEEK_STEPS = 200  # the newest steps looked at for the step interval
STATUS_BY_NAME = {
    "RUNNING": "running",
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "failed",
}

# Discovery's caches (of databases and of run directories) are cleared past this many.
_MAX_CACHED = 10_000


def _stat_pair(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# -- rows ------------------------------------------------------------------------------------


@dataclass
class _Entries:
    """Metric values in log order: one per (key, step) of a call."""

    steps: np.ndarray  # int64
    codes: np.ndarray  # int64 index into _Rows.names
    values: np.ndarray  # float64
    times: np.ndarray  # float64 unix seconds; NaN where unknown

    @property
    def n(self) -> int:
        return int(self.steps.size)

    def take(self, index: np.ndarray) -> _Entries:
        return _Entries(self.steps[index], self.codes[index], self.values[index], self.times[index])

    @staticmethod
    def join(parts: Sequence[_Entries]) -> _Entries:
        """The parts one after another (at least one part)."""
        if len(parts) == 1:
            return parts[0]
        return _Entries(
            np.concatenate([p.steps for p in parts]),
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.times for p in parts]),
        )


class _Rows:
    """Entries in log order → one row per step, as ParsedBlocks.

    Consecutive entries of one step are one row (a later value of a key wins, NaN included:
    MLflow's NaN is a value that was logged). The newest row is kept, so a step continued in
    the next read is handed over again whole: the table supersedes its last row with it.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {}
        self.last: tuple[int, dict[str, float]] | None = None
        self.over_cap = False  # a name past MAX_SERIES was dropped (said once)

    def code(self, name: str) -> int:
        """The code of a metric name; -1 for a name that is not kept (reserved, or past
        MAX_SERIES)."""
        code = self._codes.get(name)
        if code is None:
            if name in RESERVED_NAMES:
                return -1
            if len(self.names) >= MAX_SERIES:
                self.over_cap = True
                return -1
            code = self._codes[name] = len(self.names)
            self.names.append(name)
        return code

    def reset(self) -> None:
        self.last = None

    def block(self, entries: _Entries) -> ParsedBlock | None:
        kept = entries.codes >= 0
        if not kept.all():
            entries = entries.take(np.flatnonzero(kept))
        n = entries.n
        if n == 0:
            return None
        steps = entries.steps
        new_row = np.empty(n, dtype=bool)
        new_row[0] = True
        np.not_equal(steps[1:], steps[:-1], out=new_row[1:])
        starts = np.flatnonzero(new_row)
        group = np.cumsum(new_row) - 1
        rows = starts.size
        row_steps = steps[starts].astype(np.int64)
        columns: dict[str, np.ndarray] = {}
        in_first_row: set[str] = set()
        order = np.argsort(entries.codes, kind="stable")
        sorted_codes = entries.codes[order]
        cuts = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
        for index in np.split(order, cuts):
            g = group[index]
            last_in_row = np.empty(g.size, dtype=bool)
            last_in_row[-1] = True
            np.not_equal(g[1:], g[:-1], out=last_in_row[:-1])
            column = np.full(rows, np.nan)
            column[g[last_in_row]] = entries.values[index[last_in_row]]
            name = self.names[int(entries.codes[index[0]])]
            columns[name] = column
            if g[0] == 0:
                in_first_row.add(name)
        if TIME_COLUMN not in columns:
            ends = np.r_[starts[1:], n] - 1
            times = entries.times[ends]
            if not np.isnan(times).all():
                columns[TIME_COLUMN] = times
                in_first_row.add(TIME_COLUMN)
        if self.last is not None and self.last[0] == row_steps[0]:
            for name, value in self.last[1].items():
                if name in in_first_row:
                    continue  # logged again at this step: the newer value stands
                if name not in columns:
                    columns[name] = np.full(rows, np.nan)
                columns[name][0] = value
        self.last = (
            int(row_steps[-1]),
            {name: float(c[-1]) for name, c in columns.items() if not math.isnan(c[-1])},
        )
        return ParsedBlock(row_steps, columns)


def _param_value(text: str) -> Any:
    """A param as MLflow stored it (str(value)) back as a number or bool where it was one."""
    if len(text) > MAX_PARAM_CHARS:
        return text[:MAX_PARAM_CHARS] + "…"
    if _INT.fullmatch(text) and len(text) <= 19:
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    return {"True": True, "False": False, "None": None}.get(text, text)


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _config(pairs: Sequence[tuple[object, object]]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in pairs:
        if isinstance(key, str) and isinstance(value, str):
            config[utf8_text(key)] = _param_value(utf8_text(value))
    return config


# -- the source ------------------------------------------------------------------------------


class MlflowSource(Source):
    """One MLflow run: `MlflowSource(location)` is a database run when the location names a
    run id (`key`), else a file-store run directory."""

    format = FORMAT
    label = LABEL

    def __new__(cls, location: RunLocation) -> MlflowSource:
        target: type[MlflowSource] = cls
        if cls is MlflowSource:
            # The store readers extend this class, so they are imported when first asked for.
            from monitor.sources.mlflow_files import MlflowDirSource
            from monitor.sources.mlflow_sqlite import MlflowDbSource

            target = MlflowDbSource if location.key is not None else MlflowDirSource
        return super().__new__(target)

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self._rows = _Rows()
        self._info_stamp: tuple[Any, ...] | None = None
        self._cap_said = False

    def _skip(self, out: SourceRead, where: str, line: int | None, reason: str) -> None:
        out.skipped += 1
        if len(out.problems) < MAX_PROBLEMS_PER_READ:
            out.problems.append(Problem(where, line, reason))

    def _note_cap(self, out: SourceRead) -> None:
        if self._rows.over_cap and not self._cap_said:
            self._cap_said = True
            why = f"more than {MAX_SERIES} metric names: the others are not read"
            out.problems.append(Problem(self.data_label, None, why))

    @property
    def data_label(self) -> str:
        return self.path.name

    def _set_info(self, info: dict[str, Any], problem: str | None) -> bool:
        changed = (info, problem) != (self.info, self.info_problem)
        self.info, self.info_problem = info, problem
        return changed

    @abstractmethod
    def read(self) -> SourceRead: ...
