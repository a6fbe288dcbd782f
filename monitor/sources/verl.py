"""verl's file logger: `trainer.logger=[file]` (verl/utils/tracking.py, class FileLogger).

One line per `Tracking.log(data, step)`: `orjson.dumps({"step": step, "data": data}) + b"\\n"`,
to `$VERL_FILE_LOGGER_PATH`, else `$VERL_FILE_LOGGER_ROOT` (default ".") /
`<project_name>/<experiment_name>.jsonl`. Facts that shape this reader (verl 0.9.1):

* orjson writes NaN and ±Infinity as `null`: they read back as NaN (a missing value);
* metric names are verl's own ("actor/ppo_kl", "critic/score/mean", …), kept as written;
  non-numeric values (numpy arrays become lists) are not series;
* no wall-clock time is logged, so there is no "time" column;
* the file is opened with "wb": a restarted run (resumed from a checkpoint or not) truncates
  it and starts over, so a changed first line means "read everything again".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.runlog import METRICS_FILE, SAMPLES_FILE
from monitor.sources.base import RunLocation, Source, SourceRead, _stat_stamp, is_file_entry
from monitor.sources.klwatch import _is_step, newest_records
from monitor.sources.parse import Problem, decode_line, parse_pieces
from monitor.sources.tail import UTF8_BOM, FileTail, foreign_encoding_problem, open_regular

FORMAT = "verl"
SUFFIX = ".jsonl"
NESTED_KEY = "data"  # the metrics live under this key of each line
HEAD_BYTES = 1 << 20  # a first line longer than this is not taken as verl's
REWRITE_PROBE_BYTES = 256  # how much of the first line is compared to notice a rewrite
_NOT_VERL_NAMES = frozenset({METRICS_FILE, SAMPLES_FILE})

# Discovery runs every few seconds over many files: remember each file's verdict by
# (path, device, inode). verl rewrites a file in place ("wb"), but a rewritten verl file
# is still a verl file, so the verdict holds until the file is replaced.
_verdicts: dict[tuple[str, int, int], bool] = {}
_MAX_VERDICTS = 10_000


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    return [
        RunLocation(FORMAT, Path(e.path))
        for e in entries
        if _is_candidate_name(e.name) and is_file_entry(e) and is_verl_file(Path(e.path))
    ]


def locate_file(path: Path) -> list[RunLocation]:
    if _is_candidate_name(path.name) and is_verl_file(path):
        return [RunLocation(FORMAT, path)]
    return []


def _is_candidate_name(name: str) -> bool:
    return name.endswith(SUFFIX) and name not in _NOT_VERL_NAMES and not name.startswith(".")


def is_verl_file(path: Path) -> bool:
    """True if the file's first line is `{"step": <int>, "data": {...}}`.

    A file without a complete first line yet is not (yet) a run: FileLogger creates the
    file before the first step is logged, and nothing tells it apart from any other empty
    .jsonl until then. A known file costs one stat; a new one, one read of its first line.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (str(path), st.st_dev, st.st_ino)
    verdict = _verdicts.get(key)
    if verdict is not None:
        return verdict
    try:
        first_line = _first_line(path)
    except OSError:
        return False
    if first_line is None:
        return False  # undecided: ask again when the first line is complete
    verdict = _is_verl_record(first_line)
    if len(_verdicts) >= _MAX_VERDICTS:
        _verdicts.clear()
    _verdicts[key] = verdict
    return verdict


def _first_line(path: Path) -> bytes | None:
    """The first line (BOM stripped); None if it has no newline yet; b"" if it is longer
    than HEAD_BYTES (no verl record is)."""
    head = b""
    with open_regular(path) as f:
        while len(head) < HEAD_BYTES:
            chunk = f.read(min(64 << 10, HEAD_BYTES - len(head)))
            if not chunk:
                return None
            newline = chunk.find(b"\n")
            if newline >= 0:
                return (head + chunk[:newline]).removeprefix(UTF8_BOM)
            head += chunk
    return b""


def _is_verl_record(line: bytes) -> bool:
    try:
        record = decode_line(line)
    except ValueError:
        return False
    return isinstance(record, dict) and _is_step(record) and isinstance(record.get("data"), dict)


class VerlSource(Source):
    format = FORMAT
    label = "verl"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.tail = FileTail(self.path)
        self._next_line = 1
        self._head: bytes | None = None  # start of the first line, to notice a rewrite

    def read(self) -> SourceRead:
        out = SourceRead()
        if self._head is not None and self._rewritten():
            # Truncated and already grown past what was read: FileTail cannot see it
            # (same inode, size not smaller), the first line can.
            self.tail = FileTail(self.path)
            self._head = None
            self._next_line = 1
            out.reset = "file was rewritten from the start (verl restarted): read again"
        chunk = self.tail.read()
        if chunk.reset:
            self._head = None
            self._next_line = 1
            out.reset = "file was truncated or replaced (verl restarted): read again"
        if chunk.encoding:
            problem = foreign_encoding_problem(chunk.encoding)
            out.problems.append(Problem(self.path.name, None, problem))
        for data, start, end in chunk.blocks:
            if self._head is None:
                self._head = data[start : min(end, start + REWRITE_PROBE_BYTES)]
            for piece in parse_pieces(data, self._next_line, start, end, nested=NESTED_KEY):
                out.skipped += len(piece.problems)
                out.problems.extend(Problem(self.path.name, ln, why) for ln, why in piece.problems)
                out.blocks.append(piece)
                self._next_line += piece.lines
        return out

    def _rewritten(self) -> bool:
        """True if the file no longer starts with the first line already read."""
        assert self._head is not None
        try:
            with open_regular(self.path) as f:
                head = f.read(len(UTF8_BOM) + len(self._head))
        except OSError:
            return False  # the tail's own open reports it
        return head.removeprefix(UTF8_BOM)[: len(self._head)] != self._head

    def refresh_info(self) -> bool:
        if self.info:
            return False
        # verl's file holds no config: the name is all there is (project/experiment).
        self.info = {"name": f"{self.path.parent.name}/{self.path.stem}", "config": {}}
        return True

    def last_write_time(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def peek_last_step(self) -> int | None:
        try:
            # verl lines run to kilobytes; the file was held to its root when found
            newest = newest_records(self.path, 1 << 16, within=None)
            return next((r["step"] for r in newest if _is_step(r)), None)
        except OSError:
            return None

    def stamp(self) -> tuple[Any, ...]:
        return (_stat_stamp(self.path),)

    @property
    def default_name(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"
