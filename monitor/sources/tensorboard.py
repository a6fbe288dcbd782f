"""TensorBoard event files: torch's SummaryWriter (transformers, TRL), tensorboard's own writer.

A run is a directory that directly holds `events.out.tfevents.*` files (transformers and TRL
write `<output_dir>/runs/<date>_<host>/`). Each file is a TFRecord stream of serialized
`tensorboard.Event`s; the protos are the ones the tensorboard package ships. Three modules:

* monitor.sources.tensorboard_records: the framing (CRC32C, records held back until complete,
  resync after a bad length CRC);
* monitor.sources.tensorboard_events: events → scalars (step, wall time, tag, value) and the
  `args` text that becomes `info["config"]`;
* this one: the files of a run, and rows assembled from the scalars.

Reading rules (each has a test in tests/test_source_tensorboard.py):

* Files are read in name order (writers name them `…tfevents.<unix time>.<host>.<pid>.<n>`),
  as one stream. Once a newer file exists, the older ones are finished, as in TensorBoard:
  their later growth, and a new file whose name sorts before one already read, are ignored
  and reported once. A file that shrank, was replaced (other inode) or deleted voids what
  was read: `SourceRead.reset` says why and everything is read again from the start.
* Rows: one row per step with a column per tag, plus "time" (the latest wall time of the
  step's events). Events come one per scalar, so a step's row is assembled from the
  consecutive events of that step:
  - a different step (larger or smaller) starts a new row; a smaller or equal step is a
    resume, which supersedes the stored rows from that step on (monitor.table);
  - a tag repeated within the row with another value starts a new row at the same step: a
    real resume. With the same value it is the same row (transformers logs `epoch` again
    with the evaluation metrics and with the final summary of a step);
  - the newest row stays open (not emitted) while its step may still be being written. It
    is emitted when a later row starts, when its tags cover those of the row before it, or
    when the files have not grown for STALE_SECONDS (a finished run: at once). Emitting a
    half-written row and then the rest would look like a resume and make every consumer
    (alert engine, caches) start over;
  - tags that arrive later for the step of a row already emitted (the end-of-training
    `train_runtime` at the same global step; evaluation metrics logged after the training
    ones) are merged into that row, which is emitted again, once the step looks finished
    (a later step, or no growth for STALE_SECONDS): a rare resume that supersedes one row.

Speed: a run of 300k steps × 4 tags (1.2M events) loads ~25× faster than tensorboard's
EventAccumulator (benchmarks/bench_sources.py: 1.7 s vs 43 s on a 2-core VM): framing is the
only per-record Python loop, and the events of a block are parsed by one protobuf call (see
the two modules above).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2

from monitor.sources.base import RunLocation, Source, SourceRead, is_file_entry
from monitor.sources.parse import ParsedBlock
from monitor.sources.tail import open_regular
from monitor.sources.tensorboard_events import (
    ARGS_TAGS,
    TIME_COLUMN,
    EventDecoder,
    Stream,
    args_config,
    is_scalar,
    tensor_scalar,
)
from monitor.sources.tensorboard_records import (
    READ_BLOCK_BYTES,
    RESYNC_SCAN_BYTES,
    FileState,
    masked_crc,
    note,
    read_records,
    tail_payloads,
)

__all__ = [  # names other modules (and tests) import from here
    "ARGS_TAGS",
    "EVENTS_PREFIX",
    "FORMAT",
    "IGNORED_GROWTH",
    "IGNORED_OLDER_FILE",
    "PEEK_WINDOW_BYTES",
    "READ_BLOCK_BYTES",
    "RESYNC_SCAN_BYTES",
    "STALE_SECONDS",
    "TIME_COLUMN",
    "TensorBoardSource",
    "locate",
    "masked_crc",
    "peek_file_last_step",
    "split_rows",
    "tensor_scalar",
]

FORMAT = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."
STALE_SECONDS = 1.0  # no growth for this long: the newest step is finished
PEEK_WINDOW_BYTES = 16384
IGNORED_OLDER_FILE = "appeared after a newer events file was read: ignored, as TensorBoard does"
IGNORED_GROWTH = "written to after a newer events file started: ignored, as TensorBoard does"


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    if any(e.name.startswith(EVENTS_PREFIX) and is_file_entry(e) for e in entries):
        return [RunLocation(FORMAT, directory)]
    return []


# -- per-read state -------------------------------------------------------------------------


@dataclass
class _OpenRow:
    """The newest row: kept to merge scalars of its step that arrive later."""

    step: int
    tags: np.ndarray  # int64 tag ids, distinct
    values: np.ndarray
    walls: np.ndarray
    emitted: bool  # a version of it was emitted
    dirty: bool  # it holds scalars not emitted yet


class _Restart(Exception):
    """What was read before is void (a file shrank, was replaced or deleted)."""


class TensorBoardSource(Source):
    format = FORMAT
    label = "TensorBoard"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.stale_seconds = STALE_SECONDS
        self.info = {"name": _run_name(self.path)}
        self._info_version = 1  # bumped whenever read() changes `info`
        self._info_seen = 0
        self._headers: dict[bytes, int] = {}  # valid 12-byte headers → record size
        self._decoder = EventDecoder(self._take_text)
        self._reset_state()

    def _reset_state(self) -> None:
        self._files: dict[str, FileState] = {}
        self._open: _OpenRow | None = None
        self._prev_tags: frozenset[int] = frozenset()  # tags of the row before the open one
        self._last_step: int | None = None
        self._last_growth = time.monotonic()

    # -- Source API -------------------------------------------------------------------------

    def read(self) -> SourceRead:
        out = SourceRead()
        for _ in range(3):  # a run rewritten while we read it: start over (bounded)
            try:
                self._read_into(out)
                break
            except _Restart as why:
                self._reset_state()
                out = SourceRead(reset=f"{why}: read again from the start")
        return out

    def refresh_info(self) -> bool:
        """True if `info` changed since the previous call (read() fills it from the events)."""
        changed = self._info_version != self._info_seen
        self._info_seen = self._info_version
        return changed

    def last_write_time(self) -> float | None:
        times = [st.st_mtime for _, st in self._stat_files()]
        return max(times) if times else None

    def peek_last_step(self) -> int | None:
        if self._last_step is not None:
            return self._last_step
        for name in reversed(self._list_files()):
            with contextlib.suppress(OSError):
                step = peek_file_last_step(self.path / name)
                if step is not None:
                    return step
        return None

    def stamp(self) -> tuple[Any, ...]:
        files = tuple((name, st.st_mtime_ns, st.st_size) for name, st in self._stat_files())
        # Flips when the open row becomes due, so a caller that reads only on a new stamp
        # still gets it emitted.
        return (files, self._open_row_due())

    # -- files ------------------------------------------------------------------------------

    def _list_files(self) -> list[str]:
        """Event file names in order; raises OSError if the directory cannot be listed."""
        with os.scandir(self.path) as it:
            return sorted(
                e.name for e in it if e.name.startswith(EVENTS_PREFIX) and is_file_entry(e)
            )

    def _stat_files(self) -> Iterator[tuple[str, os.stat_result]]:
        try:
            names = self._list_files()
        except OSError:
            return
        for name in names:
            with contextlib.suppress(OSError):
                yield name, os.stat(self.path / name)

    def _read_into(self, out: SourceRead) -> None:
        names = self._list_files()
        gone = [name for name in self._files if name not in names]
        if gone:
            raise _Restart(f"{gone[0]} was deleted")
        stream = Stream()
        newest = max(self._files) if self._files else None
        grew, mtime = False, 0.0
        for index, name in enumerate(names):
            state = self._files.get(name)
            if state is None:
                state = self._files[name] = FileState(name)
                if newest is not None and name < newest:
                    # TensorBoard never reads a file that sorts before one it has read.
                    state.finished = state.noted_ignored = True
                    note(out, name, IGNORED_OLDER_FILE, skipped=False)
            try:
                grew_now, file_mtime = self._read_file(state, stream, out)
            except FileNotFoundError:
                if state.identity is not None:
                    raise _Restart(f"{name} was deleted") from None
                del self._files[name]  # came and went between listing and opening
                continue
            except OSError as e:
                # What was read so far stays; the files after this one wait (order matters).
                note(out, name, f"cannot read: {e.strerror or e}", skipped=False)
                break
            grew, mtime = grew or grew_now, max(mtime, file_mtime)
            if index < len(names) - 1 and not state.finished:
                self._finish(state, out)
        if grew:
            self._last_growth = time.monotonic()
        stale = self._is_stale(mtime)
        block = self._assemble(stream, stale)
        if block is not None:
            out.blocks.append(block)

    def _read_file(self, state: FileState, stream: Stream, out: SourceRead) -> tuple[bool, float]:
        """Read the new records of one file; returns (it grew, its mtime)."""
        path = self.path / state.name
        if state.finished:  # a stat is enough
            st = os.stat(path)
            grew = self._observe(state, st)
            if grew and state.offset < st.st_size and not state.noted_ignored:
                state.noted_ignored = True
                note(out, state.name, IGNORED_GROWTH, skipped=False)
            return grew, st.st_mtime
        with open_regular(path, within=self.path) as f:  # no FIFO, no link out of the run
            st = os.fstat(f.fileno())
            grew = self._observe(state, st)
            if st.st_size - state.offset >= 16:
                f.seek(state.offset)

                def sink(payloads: list[bytes], lengths: np.ndarray) -> None:
                    self._decoder.decode(payloads, lengths, state.name, stream, out)

                read_records(f, st.st_size, state, self._headers, sink, out)
        return grew, st.st_mtime

    @staticmethod
    def _observe(state: FileState, st: os.stat_result) -> bool:
        """Note a file's stat; True if its size changed. Raises _Restart if it shrank or
        is another file under the same name."""
        identity = (st.st_dev, st.st_ino)
        if state.identity is not None and identity != state.identity:
            raise _Restart(f"{state.name} was replaced")
        if st.st_size < state.size:
            raise _Restart(f"{state.name} shrank")
        grew = st.st_size != state.size
        state.identity, state.size = identity, st.st_size
        return grew

    def _finish(self, state: FileState, out: SourceRead) -> None:
        """A newer file exists: this one is complete; a record still held back never will be."""
        state.finished = True
        if state.offset < state.size and not state.resyncing:  # (a lost framing was reported)
            message = f"incomplete record at byte {state.offset}, and a newer file follows: dropped"
            note(out, state.name, message)
        state.offset = state.size

    # -- events → info ----------------------------------------------------------------------

    def _take_text(self, tag: str, tensor: Any, file_name: str) -> None:
        """The `args` text of an event (tensorboard_events.EventDecoder calls it)."""
        try:
            config = args_config(tag, tensor)
        except ValueError:
            self.info_problem = f"{file_name}: the '{tag}' text is not JSON"
            return
        if config is not None and config != self.info.get("config"):
            self.info = {**self.info, "config": config}  # a new dict: readers may hold the old
            self.info_problem = None
            self._info_version += 1

    # -- scalars → rows ---------------------------------------------------------------------

    def _is_stale(self, newest_mtime: float) -> bool:
        """No growth for stale_seconds: by the files' mtime (a finished run, at once) or, if
        the file server's clock is off, by what this reader saw."""
        quiet_on_disk = newest_mtime and time.time() - newest_mtime >= self.stale_seconds
        return bool(quiet_on_disk) or self._quiet_here()

    def _quiet_here(self) -> bool:
        return time.monotonic() - self._last_growth >= self.stale_seconds

    def _open_row_due(self) -> bool:
        return self._open is not None and self._open.dirty and self._quiet_here()

    def _assemble(self, stream: Stream, stale: bool) -> ParsedBlock | None:
        """Rows from this read's scalars (after the open row's); see the module docstring."""
        open_row = self._open
        parts: list[list[np.ndarray]] = [stream.steps, stream.walls, stream.tags, stream.values]
        if open_row is not None:
            prefix = [
                np.full(open_row.tags.size, open_row.step, dtype=np.int64),
                open_row.walls,
                open_row.tags,
                open_row.values,
            ]
            parts = [[first, *rest] for first, rest in zip(prefix, parts, strict=True)]
        if not parts[0]:
            return None
        steps, walls, tags, values = (np.concatenate(p) for p in parts)
        n = steps.size
        if n == 0:
            return None
        starts, kept_mask = split_rows(steps, tags, values)
        if kept_mask is not None:
            steps, walls, tags, values = (a[kept_mask] for a in (steps, walls, tags, values))
            n = steps.size
        rows = starts.size
        bounds = np.append(starts, n)
        emit = np.ones(rows, dtype=bool)
        kept = open_row.tags.size if open_row is not None else 0
        joined_open = open_row is not None and bounds[1] > kept  # new scalars of its step
        if open_row is not None and not (open_row.dirty or joined_open):
            emit[0] = False  # emitted already, unchanged
        last = rows - 1
        last_tags = tags[bounds[last] :]
        if last == 0 and open_row is not None:
            dirty, amended = open_row.dirty or joined_open, open_row.emitted
        else:
            dirty, amended = True, False
        prev_tags = (
            frozenset(tags[bounds[last - 1] : bounds[last]].tolist())
            if rows >= 2
            else self._prev_tags
        )
        if dirty:
            covers = bool(prev_tags) and prev_tags <= frozenset(last_tags.tolist())
            emit[last] = stale or (covers and not amended)
        else:
            emit[last] = False
        self._prev_tags = prev_tags
        self._open = _OpenRow(
            step=int(steps[-1]),
            tags=last_tags.copy(),
            values=values[bounds[last] :].copy(),
            walls=walls[bounds[last] :].copy(),
            emitted=bool(emit[last]) or (last == 0 and open_row is not None and open_row.emitted),
            dirty=dirty and not emit[last],
        )
        self._last_step = int(steps[-1])
        if not emit.any():
            return None
        return self._block(steps, walls, tags, values, starts, bounds, emit)

    def _block(
        self,
        steps: np.ndarray,
        walls: np.ndarray,
        tags: np.ndarray,
        values: np.ndarray,
        starts: np.ndarray,
        bounds: np.ndarray,
        emit: np.ndarray,
    ) -> ParsedBlock:
        rows = starts.size
        out_rows = np.flatnonzero(emit)
        out_index = np.full(rows, -1, dtype=np.int64)
        out_index[out_rows] = np.arange(out_rows.size)
        row_of = np.repeat(out_index, np.diff(bounds))  # output row of each scalar, or -1
        taken = row_of >= 0
        if not taken.all():
            row_of, tags, values = row_of[taken], tags[taken], values[taken]
        names = self._decoder.tag_names
        present = np.flatnonzero(np.bincount(tags, minlength=len(names)))
        column_of = np.full(len(names), -1, dtype=np.int64)
        column_of[present] = np.arange(present.size)
        grid = np.full((present.size, out_rows.size), np.nan)
        grid[column_of[tags], row_of] = values  # tags are distinct within a row
        columns = {TIME_COLUMN: np.maximum.reduceat(walls, starts)[out_rows]}
        for j, tag_id in enumerate(present.tolist()):
            columns[names[tag_id]] = grid[j]
        return ParsedBlock(steps[starts[out_rows]], columns)


# -- helpers --------------------------------------------------------------------------------


def split_rows(
    steps: np.ndarray, tags: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of a scalar stream: (index of each row's first scalar, mask of the scalars kept,
    None if all are). The indices count kept scalars only.

    A row is a run of one step. Within it, a tag seen again with the same value is dropped
    (transformers logs `epoch` with the training, the evaluation and the final metrics of
    one step); with another value it starts a new row at the same step: a resume.
    """
    n = steps.size
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(steps[1:], steps[:-1], out=change[1:])
    run_starts = np.flatnonzero(change)
    run = np.cumsum(change) - 1
    keys = run * (int(tags.max()) + 1) + tags
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return run_starts, None  # the usual case: no tag twice in a step
    # Only the runs holding a repeated tag are walked in Python.
    order = np.argsort(keys, kind="stable")
    repeated = keys[order[1:]] == keys[order[:-1]]
    bounds = np.append(run_starts, n)
    extra: list[int] = []
    dropped: list[int] = []
    for r in np.unique(run[order[1:][repeated]]).tolist():
        first, stop = int(bounds[r]), int(bounds[r + 1])
        row: dict[int, float] = {}
        for i, tag, number in zip(
            range(first, stop), tags[first:stop].tolist(), values[first:stop].tolist(), strict=True
        ):
            if tag in row:
                old = row[tag]
                if old == number or (old != old and number != number):  # NaN == NaN here
                    dropped.append(i)
                    continue
                extra.append(i)
                row = {}
            row[tag] = number
    keep = np.ones(n, dtype=bool)
    keep[dropped] = False
    starts = np.union1d(run_starts, np.asarray(extra, dtype=np.int64))
    starts -= np.searchsorted(np.asarray(dropped, dtype=np.int64), starts)  # kept indices
    return starts, keep


def peek_file_last_step(path: Path, window: int = PEEK_WINDOW_BYTES) -> int | None:
    """Step of the last scalar event among the last `window` bytes of an events file.

    Finds the first position in the window where a record with both CRCs right starts,
    frames forward from there and parses records from the end. None if there is none.
    """
    for data in tail_payloads(path, window):
        with contextlib.suppress(DecodeError):
            event = event_pb2.Event.FromString(data)
            if any(is_scalar(v) for v in event.summary.value):
                return int(event.step)
    return None


def _run_name(directory: Path) -> str:
    """transformers/TRL write <output_dir>/runs/<date>_<host>/: name it output_dir/date_host."""
    if directory.parent.name == "runs" and directory.parent.parent.name:
        return f"{directory.parent.parent.name}/{directory.name}"
    return directory.name
