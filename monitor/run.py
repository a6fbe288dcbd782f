"""One run, read incrementally: `open_run(path)` → `Run`, `Run.refresh()`.

A `Run` is format-blind: a source (monitor.sources: klwatch JSONL, TensorBoard events, verl
JSONL, trackio SQLite, trainer_state.json) hands it new rows under the trainer's own names,
and a preset (monitor.presets) says which of those are `kl_mean`, `beta`, … and what the KL
means. `refresh()` reads only what was added since the previous call (O(new records)), so the
same object serves a live dashboard for days. Bad records are skipped and listed in
`Run.problems`; they never stop the good ones from being read.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitor.presets import KLWATCH_SERIES, KLMeaning, Preset, meaning_for, preset_from_spec
from monitor.runlog import INFO_FILE
from monitor.sources import (
    RunLocation,
    default_location,
    label,
    locate_path,
    looked_for,
    open_source,
)
from monitor.sources.base import median_interval
from monitor.sources.bucket import BucketMirror, is_url, mirror_for, mirror_of
from monitor.sources.klwatch import newest_records
from monitor.sources.parse import Problem
from monitor.table import SeriesData, SeriesTable

MAX_PROBLEMS_KEPT = 200  # a garbage file must not grow memory without bound
RECENT_LINES = 100  # "the newest records": damage among this many last lines is judged
STALL_FACTOR = 20.0  # "far longer than its usual step interval"
STALL_MIN_SECONDS = 60.0
LIVE_SECONDS = 60.0  # a run without a declared status is live if written this recently
Sample = Mapping[str, object]  # one samples.jsonl record


class Run:
    """A run being read. Thread-safe: refresh() and readers may race."""

    def __init__(
        self,
        where: RunLocation | str | os.PathLike[str],
        *,
        preset: Preset | str | None = None,
    ) -> None:
        self.location = where if isinstance(where, RunLocation) else _one_location(where)
        self.path = self.location.path
        self.mirror = mirror_of(self.path)  # set when the run lives in a bucket
        self.source = open_source(self.location)
        self.forced_preset = (
            preset_from_spec(preset, "--preset") if isinstance(preset, str) else preset
        )
        self.table = SeriesTable()
        self.read_error: str | None = None  # why the last refresh could not read the data
        self.skipped = 0  # records skipped in total (problems beyond MAX_PROBLEMS_KEPT too)
        self.last_write_time: float | None = None  # mtime of the newest data file
        self.meaning = KLMeaning("", "unknown trainer")
        self.preset_problem: str | None = None
        self.info_generation = 0  # bumped whenever the run's metadata (info) changes
        self._raw_names: dict[str, None] = {}  # in first-seen order
        self._meaning_changes = 0  # bumps `generation` when the mapping changes under rows
        # Decided once, then again only when names or metadata change: a run no preset
        # matches must not re-run detection on every refresh.
        self._meaning_decided = False
        self._problems: list[Problem] = []
        # Line-based formats: lines handed over so far, and the numbers of the damaged ones
        # among the newest RECENT_LINES (records_unreadable judges the newest records).
        self.lines_read = 0
        self._recent_bad: deque[int] = deque(maxlen=RECENT_LINES)
        self.first_bad: Problem | None = None  # the first damaged record since the last reset
        self._lock = threading.RLock()

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> int:
        """Read what was added since the last call; return how many records it parsed.

        Raises OSError (naming the path) when the run cannot be opened; the data already
        read stays.
        """
        with self._lock:
            try:
                if self.mirror is not None:
                    self._sync_mirror(self.mirror)
                read = self.source.read()
                self.last_write_time = self.source.last_write_time()
            except OSError as e:
                self.read_error = _describe_os_error(e, self.path)
                self.refresh_info()  # its name and status still show
                raise
            self.read_error = None
            if read.reset:
                self.table.clear()
                self._keep(Problem(self.data_label, None, read.reset))
                self.lines_read, self.first_bad = 0, None
                self._recent_bad.clear()
            self.skipped += read.skipped
            for problem in read.problems:
                self._keep(problem)
                if self.first_bad is None:
                    self.first_bad = problem
            parsed = 0
            names_before = len(self._raw_names)
            for block in read.blocks:
                self._raw_names.update(dict.fromkeys(block.columns))
                self.table.append(block)
                parsed += block.n
                self.lines_read += block.lines
                self._recent_bad.extend(line for line, _ in block.problems if line is not None)
            # After the read: some formats carry their metadata inside the data (TensorBoard's
            # args text), and a status written after the last records then matches them.
            info_changed = self.refresh_info()  # decides the meaning again when it changed
            if not info_changed and (
                len(self._raw_names) != names_before or not self._meaning_decided
            ):
                self._decide_meaning()
            return parsed

    @staticmethod
    def _sync_mirror(mirror: BucketMirror) -> None:
        """Fetch what the bucket has new (at most every poll interval); a bucket that cannot
        be read is this run's read error (records_unreadable), its mirror kept."""
        mirror.sync_if_due()
        if mirror.problem:
            raise OSError(mirror.problem)

    @property
    def where(self) -> str:
        """Where the run lives, for people: its path, or its bucket URL."""
        return self.mirror.display(self.path) if self.mirror is not None else str(self.location)

    def refresh_info(self) -> bool:
        """Re-read the run's metadata (run.json, …); True if it changed (then what KL means
        is decided again). The sidebar probe calls it alone."""
        with self._lock:
            changed = self.source.refresh_info()
            if changed:
                self.info_generation += 1
                self._decide_meaning()
            return changed

    def _decide_meaning(self) -> None:
        self._meaning_decided = True
        try:
            meaning = meaning_for(self._raw_names, self.info, self.forced_preset)
            self.preset_problem = None
        except ValueError as e:  # PresetError from a bad run.json 'preset'
            meaning, self.preset_problem = meaning_for(self._raw_names, {}, None), str(e)
        if meaning != self.meaning:
            old = self.meaning
            if self.table.n and (meaning.mapping, meaning.units) != (old.mapping, old.units):
                self._meaning_changes += 1  # consumers of the old names start over
            self.meaning = meaning

    def recent_damage(self) -> tuple[int, int]:
        """(damaged, lines) among the newest RECENT_LINES lines of a line-based format
        ((0, 0) for formats without lines: TensorBoard, trackio)."""
        lines = min(self.lines_read, RECENT_LINES)
        newest = self.lines_read - lines
        return sum(1 for line in self._recent_bad if line > newest), lines

    def _keep(self, problem: Problem) -> None:
        if len(self._problems) < MAX_PROBLEMS_KEPT:
            self._problems.append(problem)

    # -- views ------------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """Run metadata in run.json's shape ({} when the run has none)."""
        return self.source.info

    @property
    def info_problem(self) -> str | None:
        return self.source.info_problem

    @property
    def format(self) -> str:
        return self.location.format

    @property
    def live_note(self) -> str | None:
        """How live this run's format can be read, when not as it is written (W&B: blocks)."""
        note = self.source.live_note
        if self.mirror is not None:
            bucket = f"Read from {self.mirror.url} every {self.mirror.poll_s:.0f} s"
            if self.mirror.snapshots:
                bucket += " (databases as downloaded snapshots)"
            note = f"{note} {bucket}." if note else f"{bucket}."
        return note

    @property
    def format_label(self) -> str:
        return label(self.location.format)

    @property
    def data_label(self) -> str:
        """The file problems are reported against (metrics.jsonl, the events dir, …)."""
        return getattr(self.source, "data_label", None) or self.path.name

    @property
    def name(self) -> str:
        name = self.info.get("name")
        return name if isinstance(name, str) and name else self.source.default_name

    @property
    def problems(self) -> list[Problem]:
        extra = []
        if self.info_problem and self.source.info_file:
            extra.append(Problem(self.source.info_file, None, self.info_problem))
        if self.preset_problem:
            extra.append(Problem(INFO_FILE, None, self.preset_problem))
        return extra + list(self._problems)

    @property
    def n_rows(self) -> int:
        return self.table.n

    @property
    def generation(self) -> int:
        """Changes whenever stored rows, or the names they are read under, change."""
        return self.table.generation + self._meaning_changes

    @property
    def last_step(self) -> int | None:
        return int(self.table.steps[-1]) if self.table.n else None

    @property
    def steps(self) -> np.ndarray:
        return self.table.steps

    def column(self, name: str) -> np.ndarray:
        """A klwatch series (`kl_mean`, …) under whatever name the trainer logged it, or any
        raw series by its own name; all-NaN if the run never logged it."""
        return self.table.column(self.meaning.mapping.get(name, name))

    def series_data(self, names: Sequence[str] | None = None) -> SeriesData:
        """Steps and the named series (all by default), consistent with each other even
        while another thread refreshes. Arrays are read-only views; no copy is made."""
        with self._lock:
            wanted = self.series_names if names is None else names
            return SeriesData.of(self.table.steps, {n: self.column(n) for n in wanted})

    @property
    def series_names(self) -> list[str]:
        """klwatch series found (their names), then every raw series not mapped to one."""
        mapping = self.meaning.mapping
        mapped = [s for s in KLWATCH_SERIES if s in mapping]
        used = set(mapping.values())
        return mapped + [n for n in self.table.names if n not in used and n not in mapped]

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per step (ascending, unique), one column per series: a copy."""
        return self.series_data().frame()

    def typical_step_interval(self, window: int = 200) -> float | None:
        """Median seconds between recent records (None with fewer than 3 records)."""
        times = self.table.column("time")[-window:]
        return median_interval(times[np.isfinite(times)].tolist())

    def seconds_since_write(self, now: float | None = None) -> float | None:
        if self.last_write_time is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.last_write_time)

    def stall_threshold_s(
        self, factor: float = STALL_FACTOR, min_s: float = STALL_MIN_SECONDS
    ) -> float:
        """Silence after which a running run counts as stalled: max(min_s, factor × its usual
        step interval). The alert rule run_stalled passes its own factor and minimum."""
        return stall_threshold(self.typical_step_interval(), factor, min_s)

    def status(
        self,
        now: float | None = None,
        *,
        stall_factor: float = STALL_FACTOR,
        stall_min_s: float = STALL_MIN_SECONDS,
    ) -> str:
        """running / finished / failed / stalled / unknown: see `run_status`."""
        return run_status(
            self.info.get("status"),
            self.seconds_since_write(now),
            self.stall_threshold_s(stall_factor, stall_min_s),
        )

    @property
    def samples_file(self) -> Path | None:
        """klwatch's samples.jsonl (other formats keep no samples klwatch reads)."""
        return self.source.samples_file

    def samples(self, limit: int = 20) -> list[Sample]:
        """The last `limit` records of samples.jsonl (bad lines skipped), oldest first."""
        return read_samples(self.samples_file, limit)

    def nbytes(self) -> int:
        return self.table.nbytes()


def read_samples(path: Path | None, limit: int) -> list[Sample]:
    """The last `limit` records of a samples.jsonl (bad lines skipped), oldest first."""
    if path is None:
        return []
    try:
        # samples are small: the last 256 KiB hold far more than a page shows
        newest = newest_records(path, 256 * 1024)
        records: list[Sample] = list(itertools.islice(newest, limit))
    except OSError:
        return []
    return records[::-1]


def stall_threshold(
    interval: float | None, factor: float = STALL_FACTOR, min_s: float = STALL_MIN_SECONDS
) -> float:
    """The one definition of "stalled": silent for max(min_s, factor × the usual step
    interval) — for a loaded run, an unloaded one in the run list, and run_stalled."""
    if interval is None or not math.isfinite(interval):
        return min_s
    return max(min_s, factor * interval)


def run_status(declared: object, idle_s: float | None, stall_after_s: float) -> str:
    """The one definition of a run's status.

    A declared status (run.json) is believed, except that a "running" run silent for longer
    than `stall_after_s` is "stalled". A run that declares nothing (TensorBoard, verl, trackio,
    a hand-written logger) is "running" while its files grew in the last LIVE_SECONDS, else
    "unknown" (it may have finished or died: the files cannot say).
    """
    if declared in ("finished", "failed"):
        return str(declared)
    if declared == "running":
        return "stalled" if idle_s is not None and idle_s > stall_after_s else "running"
    if idle_s is not None and idle_s <= LIVE_SECONDS:
        return "running"
    return "unknown"


def _one_location(path: str | os.PathLike[str]) -> RunLocation:
    """The single run at `path` (a run directory or file, or a bucket URL of one); a bare
    directory is read as a klwatch run directory so a run that has not written its first
    record yet still opens."""
    if is_url(path):
        mirror = mirror_for(str(path))
        mirror.sync()
        if mirror.problem:
            raise OSError(mirror.problem)
        path = mirror.local
    found = locate_path(path, recursive=False)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        # e.g. a trackio DB with several runs: the caller must pick one RunLocation
        names = ", ".join(str(f) for f in found[:5])
        raise ValueError(f"{path} holds {len(found)} runs ({names}): open one RunLocation")
    return default_location(Path(path))


def _describe_os_error(error: OSError, path: Path) -> str:
    text = str(error.strerror or error)
    where = error.filename or path
    return f"{where}: {text}"


def open_run(
    path: str | os.PathLike[str] | RunLocation, *, preset: Preset | str | None = None
) -> Run:
    """A live handle on a run; call `refresh()` to read (more)."""
    return Run(path, preset=preset)


def load_run(
    path: str | os.PathLike[str] | RunLocation, *, preset: Preset | str | None = None
) -> Run:
    """`open_run` + one `refresh()`. FileNotFoundError when `path` holds no run."""
    if (
        not isinstance(path, RunLocation)
        and not is_url(path)
        and not locate_path(path, recursive=False)
    ):
        raise FileNotFoundError(f"no run in {path} (looked for {looked_for()})")
    run = open_run(path, preset=preset)
    run.refresh()
    return run
