"""The MLflow file store (`mlruns/<experiment_id>/<run_id>/`): which directories are runs,
their meta.yaml, and MlflowDirSource, the reader of one run.

What MLflow 3.18 writes (checked against mlflow-skinny 3.18):


File store (mlflow/store/tracking/file_store.py; MLflow 3 refuses it unless
MLFLOW_ALLOW_FILE_STORE=true, older setups have it):

* `metrics/<key>` (a key with "/" is a subfolder path) gets one line per value,
  `f"{timestamp} {value} {step}\\n"` (Python's float text: `nan`, `inf`, `-inf`; a dataset
  name and digest follow on lines logged with a dataset; MLflow < 1.0 wrote no step: step 0);
* `meta.yaml` (run_id, run_name, status 1..5 = RUNNING, SCHEDULED, FINISHED, FAILED, KILLED,
  start_time, lifecycle_stage), `params/<key>` and `tags/<key>` files holding the value;
  a deleted run keeps its directory with `lifecycle_stage: deleted`; a deleted experiment is
  moved under `.trash/` (never searched).

  Each metric file is tailed by byte offset (only complete lines). The files of one run have
  no common order, so the values of a poll are put in log order by (timestamp, step), and a
  poll is only trusted as a prefix of the log once a second look finds no file grown and no
  file new since it was read (otherwise it reads again, and after MAX_PASSES holds back the
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from monitor.sources.base import (
    RunLocation,
    SourceRead,
    median_interval,
)
from monitor.sources.mlflow_rows import (
    _INT,
    _MAX_CACHED,
    MAX_PARAMS,
    NAME_TAG,
    PEEK_STEPS,
    STATUS_BY_NAME,
    MlflowSource,
    _config,
    _Entries,
    _stat_pair,
)
from monitor.sources.parse import MAX_STEP, Problem
from monitor.sources.tail import open_regular
from monitor.text import utf8_text

META_FILE = "meta.yaml"
METRICS_DIR = "metrics"
PARAMS_DIR = "params"
TAGS_DIR = "tags"
META_MAX_BYTES = 64 << 10
PARAM_MAX_BYTES = 16 << 10
MAX_METRIC_FILES = 10_000
MAX_KEY_DEPTH = 16
MAX_LINE_BYTES = 4096  # "<ms> <float> <step>" is < 60 bytes; more is not a metric line
READ_CHUNK_BYTES = 16 << 20
PEEK_BYTES = 16 << 10  # the end of a metric file looked at for the step interval
MAX_PASSES = 3
STATUS_BY_NUMBER = {"1": "running", "3": "finished", "4": "failed", "5": "failed"}


# -- discovery -------------------------------------------------------------------------------


def is_run_dir(directory: Path) -> bool:
    """True if `directory` is an active file-store run that logged at least one metric."""
    meta_path = directory / META_FILE
    try:
        stamp = (_stat_pair(meta_path), os.stat(directory / METRICS_DIR).st_mtime_ns)
    except OSError:
        return False
    key = str(directory)
    known = _run_dirs.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    meta = read_meta(directory)
    verdict = (
        meta is not None
        and bool(meta.get("run_id") or meta.get("run_uuid"))
        and meta.get("lifecycle_stage") != "deleted"
        and _has_entries(directory / METRICS_DIR)
    )
    if len(_run_dirs) >= _MAX_CACHED:
        _run_dirs.clear()
    _run_dirs[key] = (stamp, verdict)
    return verdict


_run_dirs: dict[str, tuple[tuple[Any, ...], bool]] = {}


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as it:
            return next(it, None) is not None
    except OSError:
        return False


# -- meta.yaml -------------------------------------------------------------------------------

_YAML_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?:[ \t]+(.*))?$")


def read_meta(run_dir: Path) -> dict[str, str | None] | None:
    """The top-level scalars of a run's meta.yaml, or None if it cannot be read."""
    try:
        with open_regular(run_dir / META_FILE, within=run_dir) as f:
            data = f.read(META_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > META_MAX_BYTES:
        return None
    return parse_meta(data.decode("utf-8", "replace"))


def parse_meta(text: str) -> dict[str, str | None]:
    """`key: scalar` lines of the YAML MLflow writes (yaml.safe_dump, block style): plain,
    'single' and "double" quoted scalars, folded over several lines when long; lists and
    nested mappings are skipped. Enough for run_name, status, lifecycle_stage, start_time,
    without a YAML dependency."""
    raw: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":  # a long scalar continued, or a nested item
            if key is not None:
                raw[key] += "\n" + line.strip()
            continue
        match = _YAML_KEY.match(line)
        if match is None:  # "- item" of a list, or anything else: not a scalar of ours
            key = None
            continue
        key = match.group(1)
        raw[key] = (match.group(2) or "").strip()
    return {k: _yaml_scalar(v) for k, v in raw.items()}


def _yaml_scalar(text: str) -> str | None:
    if text.startswith("'"):
        body = text[1:-1] if text.endswith("'") and len(text) > 1 else text[1:]
        return _fold(body).replace("''", "'")
    if text.startswith('"'):
        body = text[1:-1] if text.endswith('"') and len(text) > 1 else text[1:]
        body = body.replace("\\\n", "")  # an escaped line break joins without a space
        return _YAML_ESCAPE.sub(_unescape, _fold(body))
    if text in ("", "null", "~", "Null", "NULL"):
        return None
    if text.startswith(("[", "{", "|", ">", "&", "*", "!")):
        return None  # a flow collection, block scalar, anchor or tag: not needed here
    return _fold(text)


def _fold(text: str) -> str:
    """YAML line folding: a single line break is a space, an empty line is a line break."""
    return re.sub(r"(?<!\n)\n(?!\n)", " ", text).replace("\n\n", "\n")


_YAML_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_YAML_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}


def _unescape(match: re.Match[str]) -> str:
    """One escape of a YAML double-quoted scalar (what yaml.safe_dump writes for text with
    control or non-printable characters)."""
    escape = match.group(1)
    if len(escape) > 1:
        try:
            return chr(int(escape[1:], 16))
        except (ValueError, OverflowError):
            return escape
    return _YAML_ESCAPES.get(escape, escape)


# -- file store ------------------------------------------------------------------------------


class _Rewritten(Exception):
    """A metric file shrank or was replaced: MLflow only appends, so start over."""


@dataclass
class _MetricFile:
    path: Path
    key: str
    code: int
    offset: int = 0  # bytes read (complete lines and the pending start of one)
    lines: int = 0  # complete lines read
    identity: tuple[int, int] | None = None
    pending: bytes = b""
    skipping: bool = False  # inside an overlong line: drop bytes up to its newline
    last_step: int | None = None  # the step of the newest value read
    unreadable: bool = False  # could not be opened (reported): not waited for
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = f"{METRICS_DIR}/{self.key}"

    def read_new(self, run_dir: Path) -> Iterator[tuple[bytes, int]]:
        """(complete lines, number of the first) appended since the last call."""
        with open_regular(self.path, within=run_dir) as f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            if self.identity is not None and (
                identity != self.identity or st.st_size < self.offset
            ):
                raise _Rewritten(self.label)
            self.identity = identity
            self.unreadable = False
            end = st.st_size  # what is appended while this runs is read next time
            if end > self.offset:
                f.seek(self.offset)
            while self.offset < end:
                data = f.read(min(READ_CHUNK_BYTES, end - self.offset))
                if not data:
                    break
                self.offset += len(data)
                lines = self._complete_lines(data)
                if lines:
                    first = self.lines + 1
                    self.lines += lines.count(b"\n")
                    yield lines, first

    def _complete_lines(self, data: bytes) -> bytes:
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return b""
            # The overlong line, dropped: a marker keeps its number (and says why).
            data, self.skipping = _LONG_LINE + data[newline + 1 :], False
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        if len(self.pending) > MAX_LINE_BYTES:
            self.pending, self.skipping = b"", True
        return data[:cut]


_LONG_LINE = b"\x00long line\n"  # stands in for a dropped overlong line (never valid)
_CSV_READ = pa_csv.ReadOptions(column_names=["time", "value", "step"], use_threads=False)
_CSV_PARSE = pa_csv.ParseOptions(
    delimiter=" ", quote_char=False, escape_char=False, double_quote=False
)
_CSV_CONVERT = pa_csv.ConvertOptions(
    column_types={"time": pa.int64(), "value": pa.float64(), "step": pa.int64()},
    null_values=[],
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
)


def parse_metric_lines(data: bytes, first_line: int) -> tuple[np.ndarray, ...]:
    """`<ms> <value> <step>` lines → (times s, values, steps, bad line numbers, reasons).

    One pyarrow parse for the usual lines; the lines of a chunk it refuses (a damaged
    line, MLflow < 1.0's `<ms> <value>`, a line logged with a dataset) go one by one.
    """
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), _CSV_READ, _CSV_PARSE, _CSV_CONVERT)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _parse_lines_one_by_one(data, first_line)
    if table.num_rows != data.count(b"\n"):
        return _parse_lines_one_by_one(data, first_line)  # blank lines: numbered one by one
    times = table.column("time").to_numpy().astype(np.float64) / 1e3
    values = table.column("value").to_numpy()
    steps = table.column("step").to_numpy()
    negative = steps < 0
    if negative.any():
        return _parse_lines_one_by_one(data, first_line)
    empty = np.zeros(0, dtype=np.int64)
    return times, values, steps, empty, np.zeros(0, dtype=object)


def _parse_lines_one_by_one(data: bytes, first_line: int) -> tuple[np.ndarray, ...]:
    times: list[float] = []
    values: list[float] = []
    steps: list[int] = []
    bad: list[int] = []
    reasons: list[str] = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=first_line):
        parts = line.rstrip(b"\r").split(b" ")
        if parts == [b""]:
            continue
        reason = None
        if line + b"\n" == _LONG_LINE:
            reason = f"longer than {MAX_LINE_BYTES} bytes: not a metric line"
        elif len(parts) not in (2, 3, 5):  # MLflow < 1.0: no step; with a dataset: 5
            reason = f"{len(parts)} fields, not '<timestamp> <value> <step>'"
        else:
            try:
                stamp, value = int(parts[0]) / 1e3, float(parts[1])
                step = int(parts[2]) if len(parts) > 2 else 0
            except (ValueError, OverflowError):
                reason = "not '<timestamp> <value> <step>' numbers"
            else:
                if not 0 <= step <= MAX_STEP:
                    reason = f"step must be an integer >= 0, got {step}"
        if reason is not None:
            bad.append(number)
            reasons.append(reason)
            continue
        times.append(stamp)
        values.append(value)
        steps.append(step)
    return (
        np.array(times, dtype=np.float64),
        np.array(values, dtype=np.float64),
        np.array(steps, dtype=np.int64),
        np.array(bad, dtype=np.int64),
        np.array(reasons, dtype=object),
    )


class MlflowDirSource(MlflowSource):
    """One run of an MLflow file store: `mlruns/<experiment_id>/<run_id>/`."""

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self._files: dict[str, _MetricFile] = {}
        self._held: _Entries | None = None  # values of steps a torn poll could not settle
        self._refused: set[str] = set()  # links and odd files, reported once
        self.passes = 0  # passes the last read needed (for tests and benchmarks)

    @property
    def data_label(self) -> str:
        return f"{self.path.name}/{METRICS_DIR}"

    def read(self) -> SourceRead:
        out = SourceRead()
        if not (self.path / METRICS_DIR).is_dir():
            os.stat(self.path)  # a run directory that is gone: FileNotFoundError naming it
            return out
        try:
            self._read(out)
        except _Rewritten as e:
            self._files.clear()
            self._held = None
            self._rows.reset()
            out = SourceRead(reset=f"{e} was rewritten (MLflow only appends): read again")
            self._read(out)
        self._note_cap(out)
        return out

    def _read(self, out: SourceRead) -> None:
        parts: list[_Entries] = [self._held] if self._held is not None else []
        previous_top = self._rows.last[0] if self._rows.last is not None else None
        settled = False
        for passes in range(1, MAX_PASSES + 1):
            self.passes = passes
            files = self._walk(out)
            for key in sorted(files):
                parts.extend(self._read_file(key, files[key], out))
            settled = self._settled(files)
            if settled:
                break
        entries = _Entries.join(parts) if parts else None
        self._held = None
        if entries is None or entries.n == 0:
            return
        # Log order across files: by timestamp (one per call), then step (calls in one ms).
        order = np.lexsort((entries.steps, entries.times))
        if not np.array_equal(order, np.arange(entries.n)):
            entries = entries.take(order)
        if not settled:
            frontier = self._frontier(previous_top)
            if frontier is not None:
                later = entries.steps > frontier
                if later.any():
                    self._held = entries.take(np.flatnonzero(later))
                    entries = entries.take(np.flatnonzero(~later))
        block = self._rows.block(entries)
        if block is not None:
            out.blocks.append(block)

    def _read_file(self, key: str, path: Path, out: SourceRead) -> Iterator[_Entries]:
        metric = self._files.get(key)
        if metric is None:
            name = utf8_text(key)
            metric = self._files[key] = _MetricFile(path, key, self._rows.code(name))
        try:
            for data, first in metric.read_new(self.path):
                times, values, steps, bad, reasons = parse_metric_lines(data, first)
                for number, reason in zip(bad.tolist(), reasons.tolist(), strict=True):
                    self._skip(out, metric.label, number, reason)
                if steps.size:
                    metric.last_step = int(steps[-1])
                    codes = np.full(steps.size, metric.code, dtype=np.int64)
                    yield _Entries(steps, codes, values, times)
        except _Rewritten:
            raise
        except OSError as e:
            if not metric.unreadable:
                metric.unreadable = True
                out.problems.append(Problem(metric.label, None, str(e.strerror or e)))

    def _walk(self, out: SourceRead | None) -> dict[str, Path]:
        """Every metric file of the run by key ("a/b" for metrics/a/b): regular files only,
        no links followed, at most MAX_METRIC_FILES, MAX_KEY_DEPTH folders deep."""
        found: dict[str, Path] = {}
        for key, path, regular in _files_below(self.path / METRICS_DIR):
            if not regular:
                self._refuse(out, key, "not a regular file (a link?): not read")
            elif len(found) >= MAX_METRIC_FILES:
                self._refuse(out, key, f"more than {MAX_METRIC_FILES} metric files: not read")
            else:
                found[key] = path
        return found

    def _refuse(self, out: SourceRead | None, key: str, reason: str) -> None:
        if out is not None and key not in self._refused:
            self._refused.add(key)
            out.problems.append(Problem(f"{METRICS_DIR}/{key}", None, reason))

    def _settled(self, files: dict[str, Path]) -> bool:
        """True if no metric file grew or appeared since it was read: then what was read is
        a prefix of the log (MLflow appends its values one file after another)."""
        again = self._walk(None)
        if again.keys() != files.keys():
            return False
        for key, path in again.items():
            metric = self._files[key]
            if metric.unreadable:
                continue  # reported; not waited for
            try:
                st = os.lstat(path)
            except OSError:
                return False
            if (st.st_dev, st.st_ino) != metric.identity or st.st_size != metric.offset:
                return False
        return True

    def _frontier(self, previous_top: int | None) -> int | None:
        """After a torn read: the highest step every still-growing file had reached (steps
        above it wait for the next poll); None if nothing is known to be behind."""
        behind: list[int] = []
        for key, path in self._walk(None).items():
            metric = self._files.get(key)
            if metric is None or metric.identity is None:
                behind.append(previous_top if previous_top is not None else -1)
                continue
            try:
                grew = os.lstat(path).st_size != metric.offset
            except OSError:
                continue
            if grew and metric.last_step is not None:
                behind.append(metric.last_step)
        return min(behind) if behind else None

    # -- metadata ----------------------------------------------------------------------------

    def refresh_info(self) -> bool:
        """meta.yaml (name, status, start) and params/ (config) when either changed."""
        stamp = (
            _stat_pair(self.path / META_FILE),
            _stat_pair(self.path / PARAMS_DIR),
            _stat_pair(self.path / TAGS_DIR / NAME_TAG),
        )
        if stamp == self._info_stamp and self.info:
            return False
        meta = read_meta(self.path)
        if meta is None or not (meta.get("run_id") or meta.get("run_uuid")):
            # Missing, or caught while MLflow (re)writes it: keep what was known.
            self._info_stamp = None
            if self.info:
                return False
            problem = f"{self.path / META_FILE}: not readable as MLflow's run metadata"
            return self._set_info({"name": self.path.name, "config": {}}, problem)
        self._info_stamp = stamp
        info: dict[str, Any] = {"name": self._name(meta), "config": self._params()}
        declared = _status(meta.get("status"))
        if declared is not None:
            info["status"] = declared
        start = meta.get("start_time")
        if start is not None and _INT.fullmatch(start) and int(start) > 0:
            info["created"] = int(start) / 1e3
        return self._set_info(info, None)

    def _name(self, meta: dict[str, str | None]) -> str:
        name = meta.get("run_name")
        if name:
            return utf8_text(name)
        tag = _read_small(self.path / TAGS_DIR / NAME_TAG, self.path)
        return utf8_text(tag) if tag else self.path.name

    def _params(self) -> dict[str, Any]:
        pairs: list[tuple[object, object]] = []
        for key, path, regular in _files_below(self.path / PARAMS_DIR):
            if len(pairs) >= MAX_PARAMS:
                break
            value = _read_small(path, self.path) if regular else None
            if value is not None:
                pairs.append((key, value))
        return _config(pairs)

    def last_write_time(self) -> float | None:
        times = []
        for path in [self.path / META_FILE, *self._walk(None).values()]:
            with contextlib.suppress(OSError):
                times.append(os.lstat(path).st_mtime)
        return max(times, default=None)

    def peek_last_step(self) -> int | None:
        """The step on the last line of the most recently written metric file."""
        _, _, steps = self._newest_lines(MAX_LINE_BYTES)
        return int(steps[-1]) if steps.size else None

    def peek_step_interval(self) -> float | None:
        """From the timestamps at the end of the most recently written metric file (a key
        logged every step: one line per step)."""
        times, _, _ = self._newest_lines(PEEK_BYTES)
        return median_interval(times[-PEEK_STEPS:].tolist())

    def _newest_lines(self, nbytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, values, steps) of the complete lines in the last `nbytes` of the metric
        file written last."""
        newest: tuple[int, Path] | None = None
        for path in self._walk(None).values():
            with contextlib.suppress(OSError):
                mtime = os.lstat(path).st_mtime_ns
                if newest is None or mtime > newest[0]:
                    newest = (mtime, path)
        empty = np.zeros(0)
        if newest is None:
            return empty, empty, empty
        try:
            with open_regular(newest[1], within=self.path) as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - nbytes))
                tail = f.read(nbytes)
        except OSError:
            return empty, empty, empty
        start = tail.find(b"\n") + 1 if size > nbytes else 0  # the first line may be cut
        times, values, steps, _, _ = _parse_lines_one_by_one(tail[start : tail.rfind(b"\n") + 1], 1)
        return times, values, steps

    def stamp(self) -> tuple[Any, ...]:
        files = self._walk(None)
        sizes = tuple(
            (key, _stat_pair(path)) for key, path in list(files.items())[:MAX_STAMP_FILES]
        )
        return (_stat_pair(self.path / META_FILE), sizes)

    @property
    def default_name(self) -> str:
        name = self.info.get("name") if self.info else None
        return name if isinstance(name, str) and name else self.path.name


MAX_STAMP_FILES = 64  # a run logging more keys changes one of the first 64 files too


def _status(value: str | None) -> str | None:
    if value is None:
        return None
    return STATUS_BY_NUMBER.get(value) or STATUS_BY_NAME.get(value.upper())


def _read_small(path: Path, run_dir: Path) -> str | None:
    """A param or tag file's value (MLflow writes the bare value), or None."""
    try:
        with open_regular(path, within=run_dir) as f:
            data = f.read(PARAM_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > PARAM_MAX_BYTES:
        return None
    return data.decode("utf-8", "replace")


def _files_below(root: Path) -> Iterator[tuple[str, Path, bool]]:
    """(key, path, regular) of every non-folder entry under `root`, keys "a/b" for root/a/b,
    in name order, at most MAX_KEY_DEPTH folders deep, no link followed (a link is yielded,
    not regular). Metric and param folders are walked alike."""
    stack: list[tuple[Path, str, int]] = [(root, "", 0)]
    while stack:
        directory, prefix, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            key = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < MAX_KEY_DEPTH:
                        stack.append((Path(entry.path), key + "/", depth + 1))
                    continue
                regular = entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            yield key, Path(entry.path), regular
