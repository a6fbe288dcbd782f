"""klwatch's own run directories: metrics.jsonl (+ run.json, samples.jsonl), see
docs/run-format.md. Also the format of `KLWatchCallback` and any hand-written logger."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from monitor.parse import Problem, decode_line, parse_pieces
from monitor.runlog import INFO_FILE, METRICS_FILE, SAMPLES_FILE
from monitor.sources.base import RunLocation, Source, SourceRead, _stat_stamp
from monitor.tail import FileTail

FORMAT = "klwatch"


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    if any(e.name == METRICS_FILE and _is_file(e) for e in entries):
        return [RunLocation(FORMAT, directory)]
    return []


class KLWatchSource(Source):
    format = FORMAT
    label = "klwatch"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.metrics_path = self.path / METRICS_FILE
        self.info_path = self.path / INFO_FILE
        self.samples_path = self.path / SAMPLES_FILE
        self.tail = FileTail(self.metrics_path)
        self._next_line = 1  # line number of the next complete line the tail hands over
        self._info_stamp: tuple[float, int] | None = None

    def read(self) -> SourceRead:
        chunk = self.tail.read()
        out = SourceRead()
        if chunk.reset:
            self._next_line = 1
            out.reset = "file was truncated or replaced: read again from the start"
        for data, start, end in chunk.blocks:
            for piece in parse_pieces(data, self._next_line, start, end):
                out.skipped += len(piece.problems)
                out.problems.extend(Problem(METRICS_FILE, ln, why) for ln, why in piece.problems)
                out.blocks.append(piece)
                self._next_line += piece.lines
        return out

    def refresh_info(self) -> bool:
        """Re-read run.json if its mtime or size changed."""
        try:
            st = self.info_path.stat()
        except FileNotFoundError:
            # run.json is optional: a hand-written logger or another framework's callback
            # writes metrics.jsonl only. Its absence is not a problem to report.
            changed = self._info_stamp is not None or bool(self.info) or bool(self.info_problem)
            if changed:  # the same (empty) metadata stays the same object: nothing to redraw
                self.info, self.info_problem, self._info_stamp = {}, None, None
            return changed
        except OSError as e:
            problem = f"{self.info_path}: {e.strerror}"
            if problem == self.info_problem:
                return False  # still unreadable, for the same reason
            self.info, self.info_problem, self._info_stamp = {}, problem, None
            return True
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._info_stamp:
            return False
        self._info_stamp = stamp
        self.info, self.info_problem = read_info_file(self.info_path)
        return True

    def last_write_time(self) -> float | None:
        try:
            return self.metrics_path.stat().st_mtime
        except OSError:
            return None

    def peek_last_step(self) -> int | None:
        newest = newest_records(self.metrics_path, 16384)
        return next((r["step"] for r in newest if _is_step(r)), None)

    def stamp(self) -> tuple[Any, ...]:
        return (_stat_stamp(self.metrics_path), _stat_stamp(self.info_path))


def read_info_file(path: Path) -> tuple[dict[str, Any], str | None]:
    """run.json as a dict, or ({}, why not)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return {}, f"{path}: cannot read ({e})"
    except ValueError as e:
        return {}, f"{path}: not valid JSON ({e})"
    if not isinstance(info, dict):
        return {}, f"{path}: not a JSON object"
    return info, None


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


def _is_step(record: dict[str, Any]) -> bool:
    step = record.get("step")
    return isinstance(step, int) and not isinstance(step, bool)


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
