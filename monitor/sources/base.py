"""What every on-disk format hands the format-blind `Run`: new rows, problems, metadata.

A `Source` reads one run incrementally: each `read()` returns only what was added since the
previous call (O(new data)), as `ParsedBlock`s of raw metric names. Renaming those names to
klwatch series (`kl_mean`, `beta`, …) is not a source's job: monitor.presets does it for all
formats alike.
"""

from __future__ import annotations

import itertools
import os
import statistics
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from monitor.sources.parse import ParsedBlock, Problem

MAX_PROBLEMS_PER_READ = 200  # a garbage file must not grow memory without bound


@dataclass(frozen=True, order=True)
class RunLocation:
    """Where one run lives: a directory (klwatch, TensorBoard, trainer_state.json) or a file
    (verl JSONL, trackio database). `key` names the run inside a file holding several."""

    format: str
    path: Path
    key: str | None = None

    @property
    def watch_path(self) -> Path:
        """The path whose changes (or whose children's changes) mean new data."""
        return self.path

    def __str__(self) -> str:
        return f"{self.path}#{self.key}" if self.key else str(self.path)


@dataclass
class SourceRead:
    """What one `Source.read()` found."""

    blocks: list[ParsedBlock] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    reset: str | None = None  # why everything read before is void (truncated, replaced)
    skipped: int = 0  # records skipped as bad (may exceed len(problems))


class Source(ABC):
    """One run in one on-disk format, read incrementally. Never writes anything."""

    format: ClassVar[str]  # machine name: klwatch | tensorboard | verl | trackio | trainer_state
    label: ClassVar[str]  # for people: "klwatch", "TensorBoard", …
    # what the page says about how live this format can be read (None: as it is written)
    live_note: ClassVar[str | None] = None
    # the metadata file whose problems (`info_problem`) the run's Problems list names; None
    # when the format's metadata rides inside its data (TensorBoard's args text, …)
    info_file: ClassVar[str | None] = None

    @property
    def samples_file(self) -> Path | None:
        """The run's generated samples (klwatch's samples.jsonl); None for formats without."""
        return None

    def __init__(self, location: RunLocation) -> None:
        self.location = location
        self.info: dict[str, Any] = {}  # run metadata in run.json's shape (name, config, kl, …)
        self.info_problem: str | None = None

    @property
    def path(self) -> Path:
        return self.location.path

    @abstractmethod
    def read(self) -> SourceRead:
        """The records added since the previous call. Raises OSError (naming the path) when
        the run cannot be opened at all; data read before stays with the caller."""

    def refresh_info(self) -> bool:
        """Re-read metadata if it may have changed; True if `info` changed."""
        return False

    @abstractmethod
    def last_write_time(self) -> float | None:
        """Unix mtime of the newest data file, or None if there is none."""

    def peek_last_step(self) -> int | None:
        """The last step without reading the run (for the sidebar of unloaded runs)."""
        return None

    def peek_step_interval(self) -> float | None:
        """The run's usual seconds between records without reading it (None: unknown), so
        an unloaded run's status uses the same stall threshold as a loaded one."""
        return None

    def stamp(self) -> tuple[Any, ...]:
        """Cheap fingerprint (stat results) that changes when the run's files change."""
        return (_stat_stamp(self.path),)

    @property
    def default_name(self) -> str:
        return self.location.key or self.path.name


def is_file_entry(entry: os.DirEntry[str]) -> bool:
    """A directory entry that is a regular file (False when it cannot be asked)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def is_dir_entry(entry: os.DirEntry[str]) -> bool:
    """A directory entry that is a directory (False when it cannot be asked)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def median_interval(times: Sequence[float]) -> float | None:
    """The one definition of a run's usual step interval: the median of the positive gaps
    between successive record times (None with fewer than 3 times)."""
    if len(times) < 3:
        return None
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return float(statistics.median(gaps)) if gaps else None


def _stat_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
