"""klwatch's own run directories: metrics.jsonl (+ run.json, samples.jsonl), see
docs/run-format.md. Also the format of `KLWatchCallback` and any hand-written logger.

Every file is opened only if it is a regular file (a FIFO would block, /dev/zero never
ends). run.json and samples.jsonl must also lie in the run directory itself: a symlink
leading out of it is not followed (metrics.jsonl is held to its root when runs are found).
run.json is read up to MAX_INFO_BYTES; samples.jsonl only in its tail (`newest_records`).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any

from monitor.runlog import INFO_FILE, METRICS_FILE, SAMPLES_FILE
from monitor.sources.base import (
    RunLocation,
    Source,
    SourceRead,
    _stat_stamp,
    is_dir_entry,
    median_interval,
)
from monitor.sources.parse import Problem, decode_line, parse_pieces
from monitor.sources.tail import (
    UTF8_BOM,
    FileTail,
    foreign_encoding,
    foreign_encoding_problem,
    open_regular,
    refusal,
)
from monitor.text import utf8_strings

FORMAT = "klwatch"
MAX_INFO_BYTES = 1 << 20  # run.json holds a name, a status and a config: never a megabyte
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # JSON's escape of a UTF-16 half


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    # Anything but a directory named metrics.jsonl makes a run: a FIFO or a device there is
    # then reported as the run's read error (it is never opened), not passed over unseen.
    if any(e.name == METRICS_FILE and not is_dir_entry(e) for e in entries):
        return [RunLocation(FORMAT, directory)]
    return []


class KLWatchSource(Source):
    format = FORMAT
    label = "klwatch"
    info_file = INFO_FILE

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.metrics_path = self.path / METRICS_FILE
        self.info_path = self.path / INFO_FILE
        self.samples_path = self.path / SAMPLES_FILE
        self.tail = FileTail(self.metrics_path)
        self._next_line = 1  # line number of the next complete line the tail hands over
        self._info_stamp: tuple[int, int, int, int] | None = None
        self._run_json_problem: str | None = None  # info_problem also names samples.jsonl

    def read(self) -> SourceRead:
        chunk = self.tail.read()
        out = SourceRead()
        if chunk.reset:
            self._next_line = 1
            out.reset = "file was truncated or replaced: read again from the start"
        if chunk.encoding:
            problem = foreign_encoding_problem(chunk.encoding)
            out.problems.append(Problem(METRICS_FILE, None, problem))
        for data, start, end in chunk.blocks:
            for piece in parse_pieces(data, self._next_line, start, end):
                out.skipped += len(piece.problems)
                out.problems.extend(Problem(METRICS_FILE, ln, why) for ln, why in piece.problems)
                out.blocks.append(piece)
                self._next_line += piece.lines
        return out

    def refresh_info(self) -> bool:
        """Re-read run.json if it changed; say so too when samples.jsonl will not be read
        (a FIFO, a device, a link out of the run directory). True if anything changed."""
        changed = self._refresh_run_json()
        samples = refusal(self.samples_path, within=self.path)
        problem = "; ".join(p for p in (self._run_json_problem, samples) if p) or None
        if problem != self.info_problem:
            self.info_problem = problem
            changed = True
        return changed

    def _refresh_run_json(self) -> bool:
        """Re-read run.json if its identity, mtime or size changed; True if it did."""
        try:
            st = os.stat(self.info_path)
        except FileNotFoundError:
            # run.json is optional: a hand-written logger or another framework's callback
            # writes metrics.jsonl only. Its absence is not a problem to report.
            changed = (
                self._info_stamp is not None or bool(self.info) or bool(self._run_json_problem)
            )
            if changed:  # the same (empty) metadata stays the same object: nothing to redraw
                self.info, self._run_json_problem, self._info_stamp = {}, None, None
            return changed
        except OSError as e:
            problem = f"{self.info_path}: {e.strerror}"
            if problem == self._run_json_problem:
                return False  # still unreadable, for the same reason
            self.info, self._run_json_problem, self._info_stamp = {}, problem, None
            return True
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._info_stamp:
            return False
        self._info_stamp = stamp
        self.info, self._run_json_problem = read_info_file(self.info_path, within=self.path)
        return True

    def last_write_time(self) -> float | None:
        try:
            return self.metrics_path.stat().st_mtime
        except OSError:
            return None

    def peek_last_step(self) -> int | None:
        # metrics.jsonl was held to its root when the run was found (--follow-symlinks
        # lets it leave): no link rule of its own here.
        newest = newest_records(self.metrics_path, 16384, within=None)
        return next((r["step"] for r in newest if _is_step(r)), None)

    @property
    def samples_file(self) -> Path | None:
        return self.samples_path

    def peek_step_interval(self) -> float | None:
        newest = newest_records(self.metrics_path, 65536, within=None)
        times = [r["time"] for r in itertools.islice(newest, 200) if _is_time(r.get("time"))]
        return median_interval(times[::-1])

    def stamp(self) -> tuple[Any, ...]:
        return (_stat_stamp(self.metrics_path), _stat_stamp(self.info_path))


def read_info_file(path: Path, within: Path | None = None) -> tuple[dict[str, Any], str | None]:
    """run.json as a dict, or ({}, why not). With `within`, a symlink leading out of that
    directory is not followed. At most MAX_INFO_BYTES are read."""
    try:
        with open_regular(path, within=within) as f:
            data = f.read(MAX_INFO_BYTES + 1)
    except OSError as e:
        return {}, f"{path}: cannot read ({e.strerror or e})"
    if len(data) > MAX_INFO_BYTES:
        return {}, f"{path}: larger than {MAX_INFO_BYTES >> 20} MiB: not read"
    encoding = foreign_encoding(data)
    if encoding:
        return {}, f"{path}: {foreign_encoding_problem(encoding)}"
    try:
        info = decode_line(data.removeprefix(UTF8_BOM))
    except UnicodeDecodeError:
        return {}, f"{path}: cannot read (invalid UTF-8)"
    except ValueError as e:
        return {}, f"{path}: not valid JSON ({e})"
    if not isinstance(info, dict):
        return {}, f"{path}: not a JSON object"
    return _utf8_document(data, info), None


def _utf8_document(raw: bytes, document: Any) -> Any:
    """`document` with lone surrogates replaced, when its text escapes any (rarely)."""
    return utf8_strings(document) if _SURROGATE_ESCAPE.search(raw) else document


def newest_records(
    path: Path, window: int, *, within: Path | EllipsisType | None = ...
) -> Iterator[dict[str, Any]]:
    """JSON-object lines among the last `window` bytes of a file, newest first.

    Reads only that tail, of a regular file only; a line cut by the window's start and
    lines that are not JSON objects are passed over. `within` (default: the file's own
    directory) is where a symlink may lead; None follows any. Raises OSError if the file
    cannot be read.
    """
    with open_regular(path, within=path.parent if within is ... else within) as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - window))
        lines = f.read(window).split(b"\n")
    if size > window:
        lines = lines[1:]
    for raw in reversed(lines):
        try:
            record = decode_line(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield _utf8_document(raw, record)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_step(record: dict[str, Any]) -> bool:
    step = record.get("step")
    return isinstance(step, int) and not isinstance(step, bool)
