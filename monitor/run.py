"""One run directory, read incrementally: `open_run(path)` → `Run`, `Run.refresh()`.

`refresh()` reads only the bytes appended since the previous call (O(new records)), so the
same object serves a live dashboard for days. Bad lines are skipped and listed in
`Run.problems`; they never stop the good ones from being read.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitor.parse import Problem, decode_line, parse_pieces
from monitor.runlog import INFO_FILE, METRICS_FILE, SAMPLES_FILE
from monitor.table import SeriesTable
from monitor.tail import FileTail

MAX_PROBLEMS_KEPT = 200  # a garbage file must not grow memory without bound
STALL_FACTOR = 20.0  # "far longer than its usual step interval"
STALL_MIN_SECONDS = 60.0
RUN_STATUSES = ("running", "finished", "failed", "stalled")


class Run:
    """A run directory being read. Thread-safe: refresh() and readers may race."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.metrics_path = self.path / METRICS_FILE
        self.info_path = self.path / INFO_FILE
        self.table = SeriesTable()
        self.info: dict[str, Any] = {}
        self.info_problem: str | None = None
        self.read_error: str | None = None  # why the last refresh could not read metrics
        self.skipped = 0  # lines skipped in total (problems beyond MAX_PROBLEMS_KEPT too)
        self.last_write_time: float | None = None  # mtime of metrics.jsonl
        self._problems: list[Problem] = []
        self._tail = FileTail(self.metrics_path)
        self._next_line = 1  # line number of the next complete line the tail hands over
        self._info_stamp: tuple[float, int] | None = None
        self._frame_cache: tuple[tuple[int, int], pd.DataFrame] | None = None
        self._lock = threading.RLock()

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> int:
        """Read what was appended since the last call; return how many records it parsed.

        Raises FileNotFoundError / PermissionError (naming the path) when metrics.jsonl
        cannot be opened; the data already read stays.
        """
        with self._lock:
            self.refresh_info()
            try:
                chunk = self._tail.read()
                self.last_write_time = self.metrics_path.stat().st_mtime
            except OSError as e:
                self.read_error = f"{self.metrics_path}: {e.strerror or e}"
                raise
            self.read_error = None
            if chunk.reset:
                self.table.clear()
                self._next_line = 1
                self._note(None, "file was truncated or replaced: read again from the start")
            parsed = 0
            for data, start, end in chunk.blocks:
                for piece in parse_pieces(data, self._next_line, start, end):
                    for line, reason in piece.problems:
                        self._note(line, reason)
                    self.table.append(piece)
                    parsed += piece.n
                    self._next_line += piece.lines
            return parsed

    def refresh_info(self) -> None:
        """Re-read run.json if its mtime or size changed (the light sidebar probe uses it)."""
        try:
            st = self.info_path.stat()
        except FileNotFoundError:
            self.info, self.info_problem, self._info_stamp = {}, f"{INFO_FILE} missing", None
            return
        except OSError as e:
            self.info, self.info_problem = {}, f"{self.info_path}: {e.strerror}"
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._info_stamp:
            return
        self._info_stamp = stamp
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            self.info, self.info_problem = {}, f"{self.info_path}: cannot read ({e})"
            return
        except ValueError as e:
            self.info, self.info_problem = {}, f"{self.info_path}: not valid JSON ({e})"
            return
        if not isinstance(info, dict):
            self.info, self.info_problem = {}, f"{self.info_path}: not a JSON object"
            return
        self.info, self.info_problem = info, None

    def _note(self, line: int | None, reason: str) -> None:
        if line is not None:
            self.skipped += 1
        if len(self._problems) < MAX_PROBLEMS_KEPT:
            self._problems.append(Problem(METRICS_FILE, line, reason))

    # -- views ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        name = self.info.get("name")
        return name if isinstance(name, str) and name else self.path.name

    @property
    def problems(self) -> list[Problem]:
        extra = [Problem(INFO_FILE, None, self.info_problem)] if self.info_problem else []
        return extra + list(self._problems)

    @property
    def n_rows(self) -> int:
        return self.table.n

    @property
    def generation(self) -> int:
        return self.table.generation

    @property
    def last_step(self) -> int | None:
        return int(self.table.steps[-1]) if self.table.n else None

    @property
    def steps(self) -> np.ndarray:
        return self.table.steps

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name)

    def snapshot(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Steps and the named series (all by default), consistent with each other even
        while another thread refreshes. Arrays are read-only views; no copy is made."""
        with self._lock:
            wanted = self.table.names if names is None else names
            return {"step": self.table.steps, **{n: self.table.column(n) for n in wanted}}

    @property
    def series_names(self) -> list[str]:
        return self.table.names

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per step (ascending, unique), one column per metric. Cached per version."""
        with self._lock:
            version = (self.table.generation, self.table.n)
            if self._frame_cache is None or self._frame_cache[0] != version:
                data = {"step": self.table.steps.copy()}
                for name in self.table.names:
                    data[name] = self.table.column(name).copy()
                self._frame_cache = (version, pd.DataFrame(data))
            return self._frame_cache[1]

    def typical_step_interval(self, window: int = 200) -> float | None:
        """Median seconds between recent records (None with fewer than 3 records)."""
        times = self.table.column("time")[-window:]
        times = times[np.isfinite(times)]
        if times.size < 3:
            return None
        gaps = np.diff(times)
        gaps = gaps[gaps > 0]
        return float(np.median(gaps)) if gaps.size else None

    def seconds_since_write(self, now: float | None = None) -> float | None:
        if self.last_write_time is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.last_write_time)

    def stall_threshold_s(self) -> float:
        interval = self.typical_step_interval()
        if interval is None or not math.isfinite(interval):
            return STALL_MIN_SECONDS
        return max(STALL_MIN_SECONDS, STALL_FACTOR * interval)

    def status(self, now: float | None = None) -> str:
        """running / finished / failed from run.json, or stalled: running but silent."""
        declared = self.info.get("status")
        if declared not in ("running", "finished", "failed"):
            declared = "running" if self.info else "unknown"
        if declared == "running":
            idle = self.seconds_since_write(now)
            if idle is not None and idle > self.stall_threshold_s():
                return "stalled"
        return declared

    def samples(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last `limit` records of samples.jsonl (bad lines skipped), oldest first."""
        try:
            # samples are small: the last 256 KiB hold far more than a page shows
            newest = newest_records(self.path / SAMPLES_FILE, 256 * 1024)
            return list(itertools.islice(newest, limit))[::-1]
        except OSError:
            return []

    def nbytes(self) -> int:
        return self.table.nbytes()


def newest_records(path: Path, window: int) -> Iterator[dict[str, Any]]:
    """JSON-object lines among the last `window` bytes of a file, newest first.

    Reads only that tail; a line cut by the window's start and lines that are not JSON
    objects are passed over. Raises OSError if the file cannot be read.
    """
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - window))
        lines = f.read().split(b"\n")
    if size > window:
        lines = lines[1:]
    for raw in reversed(lines):
        try:
            record = decode_line(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def open_run(path: str | os.PathLike[str]) -> Run:
    """A live handle on a run directory; call `refresh()` to read (more)."""
    return Run(path)


def load_run(path: str | os.PathLike[str]) -> Run:
    """`open_run` + one `refresh()`. FileNotFoundError names metrics.jsonl if it is absent."""
    run = open_run(path)
    if not run.metrics_path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run.path} (looked for {run.metrics_path})")
    run.refresh()
    return run
