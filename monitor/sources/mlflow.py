"""MLflow runs: the SQLite store (`mlflow.db`, or any `*.db` holding MLflow's tables) and the
file store (`mlruns/<experiment_id>/<run_id>/`). One klwatch run per MLflow run.

What MLflow 3.18 writes (checked against mlflow-skinny 3.18 and the databases it creates):

SQLite store (mlflow/store/tracking/sqlalchemy_store.py, dbmodels/models.py):

* `metrics(key, value FLOAT, timestamp BIGINT ms, run_uuid, step BIGINT, is_nan BOOLEAN)`,
  primary key (key, timestamp, step, run_uuid, value, is_nan), an index on run_uuid, no
  INTEGER PRIMARY KEY: rows carry SQLite's implicit rowid. One row per (key, step) per
  `log_metric(s)` call; the rows of one call share its timestamp and step. A NaN is stored as
  value 0 with is_nan 1; +Infinity and -Infinity as ±1.7976931348623157e308 (the largest
  double: `sanitize_metric_value`), read back here as ±Infinity;
* `runs(run_uuid, name, status 'RUNNING'|'SCHEDULED'|'FINISHED'|'FAILED'|'KILLED',
  start_time ms, lifecycle_stage 'active'|'deleted', experiment_id, …)`; `params(key, value
  TEXT, run_uuid)`, `tags(key, value, run_uuid)` (the name also in tag `mlflow.runName`),
  `experiments(experiment_id, name, lifecycle_stage, …)`;
* a rollback journal (journal_mode DELETE, never WAL) and `PRAGMA busy_timeout = 20000` on
  every session: a commit waits (up to 20 s) for readers' SHARED locks to clear.

  Reading must never make the training fail with "database is locked": a fresh read-only
  connection per poll (`mode=ro`: the journal mode is never touched), no transaction held
  between statements (each SELECT is its own short read, its lock released when its rows are
  fetched), new rows found by rowid through the run_uuid index (`run_uuid = ? AND rowid > ?`,
  O(new rows)), in batches of BATCH_ROWS (a few ms each: the writer waits at most that long).
  A new row always gets a rowid above every existing one (max + 1), and only the writer's
  commit makes it visible, so nothing is ever inserted behind the last rowid read. The last
  row read is remembered (rowid, key, step, timestamp): if that rowid no longer holds it (a
  `VACUUM` or `mlflow db upgrade` renumbered rows, the file was replaced), the run is read
  again from the start.

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
  steps a file that was still being written may not have reached yet).

Rows: one per step. The values of consecutive calls at one step are one row (the Trainer logs
its train and eval metrics of a global step in separate calls); a step below the previous one
starts a new segment, as everywhere in klwatch (a run resumed with MLFLOW_RUN_ID from an
earlier checkpoint). transformers' MLflowCallback logs the Trainer's raw names (`kl`,
`reward`, `completions/mean_length`, `eval_kl`, …) at `step=state.global_step`, after
replacing every character outside `[0-9A-Za-z_\\-. :/]` with "_" (none of TRL's names has
one); `time` is the newest timestamp of the row's values.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sqlite3
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from monitor.sources.base import (
    MAX_PROBLEMS_PER_READ,
    RunLocation,
    Source,
    SourceRead,
    median_interval,
)
from monitor.sources.parse import MAX_STEP, ParsedBlock, Problem
from monitor.sources.tail import open_regular
from monitor.text import utf8_text

FORMAT = "mlflow"
LABEL = "MLflow"
TIME_COLUMN = "time"
RESERVED_NAMES = frozenset({"step"})  # the row's own step, never a series
MAX_SERIES = 4096  # distinct metric names per run; a hostile store must not grow memory
MAX_PARAMS = 4096
MAX_PARAM_CHARS = 1000  # MLflow allows 6,000; a config value longer than this is cut
NAME_TAG = "mlflow.runName"

# -- SQLite store ----------------------------------------------------------------------------
DB_SUFFIX = ".db"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 0.2  # a commit under way holds the lock for ms: retry on the next poll
STATEMENT_DEADLINE_S = 10.0  # no honest statement here takes this long: a hostile DB might
BATCH_ROWS = 2000  # ~2-3 ms of SQLite work: how long one read may hold up the writer's commit
FLUSH_ENTRIES = 1 << 18  # values collected before they are turned into rows
MAX_RUNS_PER_DB = 10_000
PEEK_ROWS = 8000  # newest rows looked at for the step interval (~200 steps of ~40 keys)
PEEK_STEPS = 200
DOUBLE_MAX = 1.7976931348623157e308  # what MLflow stores for ±Infinity
STATUS_BY_NAME = {
    "RUNNING": "running",
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "failed",
}

# -- file store ------------------------------------------------------------------------------
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

# A schema is MLflow's if it has these tables with at least these columns.
_DB_TABLES = {
    "runs": frozenset(
        {"run_uuid", "name", "status", "start_time", "lifecycle_stage", "experiment_id"}
    ),
    "metrics": frozenset({"key", "value", "timestamp", "run_uuid", "step", "is_nan"}),
    "params": frozenset({"key", "value", "run_uuid"}),
    "tags": frozenset({"key", "value", "run_uuid"}),
    "experiments": frozenset({"experiment_id", "name", "lifecycle_stage"}),
}
_ROWID_NAMES = frozenset({"rowid", "_rowid_", "oid"})  # a column named so would shadow it
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # MLflow's are 32 hex digits
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_RUNS = """
SELECT r.run_uuid, r.name FROM runs AS r
WHERE (r.lifecycle_stage IS NULL OR r.lifecycle_stage != 'deleted')
  AND NOT EXISTS (SELECT 1 FROM experiments AS e
                  WHERE e.experiment_id = r.experiment_id AND e.lifecycle_stage = 'deleted')
  AND EXISTS (SELECT 1 FROM metrics AS m WHERE m.run_uuid = r.run_uuid)
ORDER BY r.start_time DESC, r.run_uuid LIMIT ?
"""
# Both through the index on run_uuid (its entries are (run_uuid, rowid)): O(log n + new rows).
_NEWEST = "SELECT max(rowid) FROM metrics WHERE run_uuid = ?"
_NEW_ROWS = (
    "SELECT rowid, key, value, step, is_nan, timestamp FROM metrics"
    " WHERE run_uuid = ? AND rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
)
_ANCHOR = "SELECT key, step, timestamp FROM metrics WHERE rowid = ? AND run_uuid = ?"
_RECENT = "SELECT step, timestamp FROM metrics WHERE run_uuid = ? ORDER BY rowid DESC LIMIT ?"
_RUN_INFO = "SELECT r.name, r.status, r.start_time FROM runs AS r WHERE r.run_uuid = ?"
_PARAMS = "SELECT key, value FROM params WHERE run_uuid = ? LIMIT ?"
_NAME_TAG = "SELECT value FROM tags WHERE run_uuid = ? AND key = ? LIMIT 1"


class DatabaseBusy(OSError):
    """The writer holds the database's lock right now: the next poll reads on."""

    def __init__(self, path: Path, detail: str = "database busy: will retry") -> None:
        super().__init__(errno.EBUSY, detail, str(path))


# -- discovery -------------------------------------------------------------------------------


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    """MLflow runs held directly in `directory`: each MLflow database (one location per run)
    and, if `directory` is a file-store run (meta.yaml + metrics/), that run."""
    found: list[RunLocation] = []
    by_name = {e.name: e for e in entries}
    meta, metrics = by_name.get(META_FILE), by_name.get(METRICS_DIR)
    if (
        meta is not None
        and metrics is not None
        and _is_file(meta)
        and _is_dir(metrics)
        and is_run_dir(directory)
    ):
        found.append(RunLocation(FORMAT, directory))
    for entry in entries:
        if entry.name.endswith(DB_SUFFIX) and _is_file(entry):
            found.extend(locate_file(Path(entry.path)))
    return found


def locate_file(path: Path) -> list[RunLocation]:
    """One location per (active, metric-logging) run of an MLflow database; [] otherwise."""
    if not path.name.endswith(DB_SUFFIX):
        return []
    return [RunLocation(FORMAT, path, key=run_id) for run_id in run_ids(path)]


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


@dataclass
class _Catalog:
    stamp: tuple[Any, ...]
    names: dict[str, str]  # run id → run name, oldest run first


# Discovery asks about every *.db every ~10 s: a database that did not change is not opened.
_catalogs: dict[str, _Catalog] = {}
_catalogs_lock = threading.Lock()
_MAX_CACHED = 10_000


def run_ids(path: Path) -> list[str]:
    """The ids of the active runs that logged metrics in an MLflow database, oldest first;
    [] if it is not one (or cannot be read now and was not known)."""
    catalog = _catalog(path)
    return list(catalog.names) if catalog is not None else []


def _catalog(path: Path) -> _Catalog | None:
    key = str(path)
    stamp = _db_stamp(path)
    if stamp is None:
        return None
    with _catalogs_lock:
        known = _catalogs.get(key)
    if known is not None and known.stamp == stamp:
        return known
    try:
        catalog = _Catalog(stamp, _scan_runs(path))
    except (OSError, sqlite3.Error):
        return known  # busy or mid-write: keep what was known
    with _catalogs_lock:
        if len(_catalogs) >= _MAX_CACHED:
            _catalogs.clear()
        _catalogs[key] = catalog
    return catalog


def _scan_runs(path: Path) -> dict[str, str]:
    if not _has_sqlite_magic(path):
        return {}
    with _Database(path) as db:
        if not db.is_mlflow():
            return {}
        rows = db.query(_RUNS, (MAX_RUNS_PER_DB,))
    names: dict[str, str] = {}
    for run_id, name in reversed(rows):
        if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
            names[run_id] = utf8_text(name) if isinstance(name, str) and name else run_id
    return names


def _has_sqlite_magic(path: Path) -> bool:
    try:
        with open_regular(path) as f:  # a FIFO named *.db must not block discovery
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _db_stamp(path: Path) -> tuple[Any, ...] | None:
    """Changes with every commit: the file's stat, and the header's file change counter
    (bytes 24-27, bumped by each commit in rollback-journal mode: two commits within one
    mtime tick that add no page still differ), and the WAL's stat for a WAL database."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    counter = None
    with contextlib.suppress(OSError), open_regular(path) as f:
        counter = f.read(_HEADER_BYTES)[_COUNTER_AT:_HEADER_BYTES]
    wal = _stat_pair(Path(f"{path}-wal"))
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, counter, wal)


_COUNTER_AT, _HEADER_BYTES = 24, 28


def _stat_pair(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


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


# -- SQLite store ----------------------------------------------------------------------------


class _Database:
    """A fresh read-only connection: autocommit (no transaction outlives a statement),
    a small busy timeout, every statement under a deadline."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.stat(path)  # a missing database is FileNotFoundError naming it
        uri = path.absolute().as_uri()
        # check_same_thread=False: a Run is refreshed from the store's reader threads (under
        # the Run's lock, so never two at once); the connection never outlives one poll.
        self.conn = sqlite3.connect(
            f"{uri}?mode=ro",
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        self._deadline = math.inf
        self.conn.set_progress_handler(self._past_deadline, 100_000)
        try:
            # Connection settings only (nothing is written): functions in a hostile schema's
            # views or triggers are not run, and no statement may write.
            self.conn.execute("PRAGMA trusted_schema = OFF")
            self.conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as e:
            self.conn.close()
            raise _os_error(e, path) from e

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        self._deadline = time.monotonic() + STATEMENT_DEADLINE_S
        try:
            cursor = self.conn.execute(sql, args)
            try:
                return cursor.fetchall()  # all rows: the statement ends, its lock is released
            finally:
                cursor.close()
        except sqlite3.OperationalError as e:
            if "Could not decode to UTF-8" not in str(e) or self.conn.text_factory is not str:
                raise
            # Text that is not UTF-8 (a hostile or damaged store): read it with U+FFFD.
            self.conn.text_factory = _lenient_text
            return self.query(sql, args)
        finally:
            self._deadline = math.inf

    def is_mlflow(self) -> bool:
        """MLflow's tables, each a real table (not a view or a virtual table: a hostile
        schema could make either arbitrarily slow) with rowids (metrics) and its columns."""
        found = {
            name: (kind, sql)
            for name, kind, sql in self.query(
                "SELECT name, type, sql FROM sqlite_master WHERE name IN (?, ?, ?, ?, ?)",
                tuple(_DB_TABLES),
            )
        }
        for table, needed in _DB_TABLES.items():
            kind, sql = found.get(table, (None, None))
            if kind != "table" or not isinstance(sql, str):
                return False
            head = sql.lstrip().upper()
            if head.startswith("CREATE VIRTUAL") or "WITHOUT ROWID" in head:
                return False
            columns = {str(row[1]).lower() for row in self.query(f"PRAGMA table_info({table})")}
            if not needed <= columns or columns & _ROWID_NAMES:
                return False
        return True

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> _Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _code(error: sqlite3.Error) -> int | None:
    return getattr(error, "sqlite_errorcode", None)


def _os_error(error: sqlite3.Error, path: Path) -> OSError:
    """An sqlite3 error as the OSError a Run reports (naming the file)."""
    code = _code(error)
    if code is not None and code & 0xFF in _BUSY_CODES:
        return DatabaseBusy(path)
    if code is not None and code & 0xFF in _CORRUPT_CODES:
        return OSError(errno.EIO, f"not a readable SQLite database ({error})", str(path))
    if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
        # e.g. a hot journal left by a writer that died mid-commit: only a writer (MLflow,
        # on its next start) may roll it back
        return OSError(errno.EAGAIN, f"cannot read the database now ({error})", str(path))
    if code == sqlite3.SQLITE_INTERRUPT:
        why = f"a query ran past {STATEMENT_DEADLINE_S:.0f} s: not an MLflow store klwatch reads"
        return OSError(errno.ETIMEDOUT, why, str(path))
    if "no such table" in str(error) or "no such column" in str(error):
        return OSError(errno.EINVAL, f"not an MLflow database ({error})", str(path))
    return OSError(errno.EIO, f"cannot read the MLflow database ({error})", str(path))


class MlflowDbSource(MlflowSource):
    """One run of an MLflow SQLite store (RunLocation.key = the run id)."""

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.run_id = location.key or ""
        self._last = 0  # every row of this run with rowid <= this was read
        self._anchor: tuple[object, ...] | None = None  # (key, step, timestamp) at _last
        self._read_stamp: tuple[Any, ...] | None = None  # the database's, at the last read
        self._reset: str | None = None  # why the rows read so far are void, not yet said
        # (database stamp, the run's newest value's unix time) when last known
        self._newest: tuple[Any, float | None] = (None, None)

    def read(self) -> SourceRead:
        out = SourceRead()
        stamp = _db_stamp(self.path)
        if stamp is not None and stamp == self._read_stamp:
            return out  # not one commit since the last complete read: nothing to ask
        complete = False
        with _connected(self.path) as db:
            progressed = False
            pending: list[_Entries] = []
            collected = 0
            try:
                if self._anchor is not None and db.query(_ANCHOR, (self._last, self.run_id)) != [
                    self._anchor
                ]:  # the rowid read last holds another row now
                    self._start_over()
                    self._reset = "MLflow's metrics table was rebuilt or replaced: read again"
                newest = db.query(_NEWEST, (self.run_id,))[0][0]
                if not isinstance(newest, int):
                    newest = self._last  # no metrics (yet)
                while self._last < newest:
                    rows = db.query(_NEW_ROWS, (self.run_id, self._last, newest, BATCH_ROWS))
                    if not rows:
                        break
                    pending.append(self._entries(rows, out))
                    last = rows[-1]
                    self._last, self._anchor = last[0], (last[1], last[3], last[5])
                    self._newest = (stamp, _ms(last[5]))
                    progressed = True
                    collected += len(rows)
                    if collected >= FLUSH_ENTRIES:
                        self._flush(pending, out)
                        collected = 0
                    if len(rows) < BATCH_ROWS:
                        break
                complete = True
            except sqlite3.Error as e:
                if not progressed:
                    raise _os_error(e, self.path) from e
                # Busy after some batches: hand over what was read, the rest next poll.
            self._flush(pending, out)
        self._read_stamp = stamp if complete else None
        out.reset, self._reset = self._reset, None  # said with the first read after it
        self._note_cap(out)
        return out

    def _flush(self, pending: list[_Entries], out: SourceRead) -> None:
        if pending:
            block = self._rows.block(_Entries.join(pending))
            if block is not None:
                out.blocks.append(block)
            pending.clear()

    def _start_over(self) -> None:
        self._last, self._anchor, self._read_stamp = 0, None, None
        self._rows.reset()

    def _entries(self, rows: list[tuple[Any, ...]], out: SourceRead) -> _Entries:
        """A batch of (rowid, key, value, step, is_nan, timestamp) rows as entries: whole
        columns at once, row by row only where a row is not what MLflow writes."""
        _, keys, values, steps, nans, stamps = zip(*rows)  # noqa: B905 (rows of 6)
        try:
            key_array = pa.array(keys, type=pa.string())
            step_array = np.array(steps)
            nan_array = np.array(nans)
            stamp_array = np.array(stamps)
            # REAL affinity: MLflow's values are floats; text in that column is not numeric
            # (SQLite converts what is), and np.array refuses it
            value_array = np.array(values, dtype=np.float64)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return self._entries_one_by_one(rows, out)
        if (
            key_array.null_count
            or step_array.dtype.kind != "i"
            or nan_array.dtype.kind not in "ib"
            or stamp_array.dtype.kind != "i"
        ):
            return self._entries_one_by_one(rows, out)
        encoded = key_array.dictionary_encode()
        codes = np.array(
            [self._rows.code(utf8_text(name)) for name in encoded.dictionary.to_pylist()],
            dtype=np.int64,
        )[encoded.indices.to_numpy(zero_copy_only=False)]
        value_array = _from_stored(value_array, nan_array != 0)
        entries = _Entries(
            step_array.astype(np.int64), codes, value_array, stamp_array.astype(np.float64) / 1e3
        )
        negative = entries.steps < 0
        if negative.any():
            for row in (r for r, bad in zip(rows, negative, strict=True) if bad):
                self._skip(out, self.path.name, None, f"rowid {row[0]}: negative step {row[3]}")
            entries = entries.take(np.flatnonzero(~negative))
        return entries

    def _entries_one_by_one(self, rows: list[tuple[Any, ...]], out: SourceRead) -> _Entries:
        steps: list[int] = []
        codes: list[int] = []
        values: list[float] = []
        times: list[float] = []
        for rowid, key, value, step, is_nan, stamp in rows:
            reason = None
            if not isinstance(key, str):
                reason = f"key is not text: {key!r:.40}"
            elif isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
                reason = f"step must be an integer >= 0, got {step!r:.40}"
            elif is_nan not in (0, 1):
                reason = f"is_nan must be 0 or 1, got {is_nan!r:.40}"
            elif is_nan == 0 and (isinstance(value, bool) or not isinstance(value, int | float)):
                reason = f"value is not a number: {value!r:.40}"
            if reason is not None:
                self._skip(out, self.path.name, None, f"rowid {rowid}: {reason}")
                continue
            steps.append(step)
            codes.append(self._rows.code(utf8_text(key)))
            values.append(math.nan if is_nan else _finite_or_inf(float(value)))
            valid_stamp = isinstance(stamp, int) and not isinstance(stamp, bool)
            times.append(stamp / 1e3 if valid_stamp else math.nan)
        return _Entries(
            np.array(steps, dtype=np.int64),
            np.array(codes, dtype=np.int64),
            np.array(values, dtype=np.float64),
            np.array(times, dtype=np.float64),
        )

    # -- metadata ----------------------------------------------------------------------------

    def refresh_info(self) -> bool:
        """Name, status, start time and params (as `config`) when the database changed."""
        stamp = _db_stamp(self.path)
        if stamp == self._info_stamp and self.info:
            return False
        self._info_stamp = stamp
        info: dict[str, Any] = {"name": self.default_name, "config": {}}
        try:
            with _connected(self.path) as db:
                run = db.query(_RUN_INFO, (self.run_id,))
                params = db.query(_PARAMS, (self.run_id, MAX_PARAMS))
                tag = db.query(_NAME_TAG, (self.run_id, NAME_TAG))
        except OSError as e:
            self._info_stamp = None  # try again next time
            problem = f"{self.path}: cannot read run {self.run_id} ({e.strerror or e})"
            return self._set_info(self.info or info, problem)
        if not run:
            return self._set_info(info, f"{self.path}: no run {self.run_id}")
        name, status, start_time = run[0]
        if isinstance(name, str) and name:
            info["name"] = utf8_text(name)
        elif tag and isinstance(tag[0][0], str) and tag[0][0]:
            info["name"] = utf8_text(tag[0][0])
        declared = STATUS_BY_NAME.get(status) if isinstance(status, str) else None
        if declared is not None:
            info["status"] = declared
        if isinstance(start_time, int) and not isinstance(start_time, bool) and start_time > 0:
            info["created"] = start_time / 1e3
        info["config"] = _config(params)
        return self._set_info(info, None)

    def last_write_time(self) -> float | None:
        """When this run last logged: its newest value's timestamp (the file's mtime says
        when any run of the database last did)."""
        stamp = _db_stamp(self.path)
        if stamp != self._newest[0]:
            try:
                with _connected(self.path) as db:
                    rows = db.query(_RECENT, (self.run_id, 1))
                self._newest = (stamp, _ms(rows[0][1]) if rows else None)
            except OSError:
                self._newest = (None, None)
        if self._newest[1] is not None:
            return self._newest[1]
        with contextlib.suppress(OSError):
            return os.stat(self.path).st_mtime
        return None

    def peek_step_interval(self) -> float | None:
        """From the timestamps of the run's newest rows (one per step: the last of a step)."""
        try:
            with _connected(self.path) as db:
                rows = db.query(_RECENT, (self.run_id, PEEK_ROWS))
        except OSError:
            return None
        times = [_ms(stamp) for _, stamp in _step_ends(rows[::-1])]
        return median_interval([t for t in times if t is not None][-PEEK_STEPS:])

    def peek_last_step(self) -> int | None:
        """The step of the run's newest row: one probe of the run_uuid index."""
        try:
            with _connected(self.path) as db:
                rows = db.query(_RECENT, (self.run_id, 1))
        except OSError:
            return None
        step = rows[0][0] if rows else None
        if isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP:
            return step
        return None

    def stamp(self) -> tuple[Any, ...]:
        return (_db_stamp(self.path),)

    @property
    def default_name(self) -> str:
        with _catalogs_lock:
            known = _catalogs.get(str(self.path))
        if known is not None and self.run_id in known.names:
            return known.names[self.run_id]
        return self.run_id or self.path.stem


@contextlib.contextmanager
def _connected(path: Path) -> Iterator[_Database]:
    """A fresh connection for one poll, closed after it; sqlite3 errors as OSError."""
    try:
        db = _Database(path)
    except sqlite3.Error as e:
        raise _os_error(e, path) from e
    try:
        yield db
    except sqlite3.Error as e:
        raise _os_error(e, path) from e
    finally:
        db.close()


def _ms(stamp: object) -> float | None:
    """MLflow's millisecond timestamp as unix seconds (None if it is not one)."""
    if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 < stamp < 1 << 53:
        return stamp / 1e3
    return None


def _step_ends(rows: Sequence[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """The last (step, timestamp) of each run of equal steps, in order."""
    for i, row in enumerate(rows):
        if i + 1 == len(rows) or rows[i + 1][0] != row[0]:
            yield row


def _from_stored(values: np.ndarray, is_nan: np.ndarray) -> np.ndarray:
    """MLflow's stored floats as logged: is_nan → NaN, ±DOUBLE_MAX → ±Infinity."""
    values = np.where(is_nan, np.nan, values)
    values[values == DOUBLE_MAX] = math.inf
    values[values == -DOUBLE_MAX] = -math.inf
    return values


def _finite_or_inf(value: float) -> float:
    if value == DOUBLE_MAX:
        return math.inf
    if value == -DOUBLE_MAX:
        return -math.inf
    return value


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
        stack: list[tuple[Path, str, int]] = [(self.path / METRICS_DIR, "", 0)]
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
                if not regular:
                    self._refuse(out, key, "not a regular file (a link?): not read")
                elif len(found) >= MAX_METRIC_FILES:
                    self._refuse(out, key, f"more than {MAX_METRIC_FILES} metric files: not read")
                else:
                    found[key] = Path(entry.path)
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
        stack: list[tuple[Path, str, int]] = [(self.path / PARAMS_DIR, "", 0)]
        while stack and len(pairs) < MAX_PARAMS:
            directory, prefix, depth = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False) and depth < MAX_KEY_DEPTH:
                        stack.append((Path(entry.path), f"{prefix}{entry.name}/", depth + 1))
                    elif entry.is_file(follow_symlinks=False) and len(pairs) < MAX_PARAMS:
                        value = _read_small(Path(entry.path), self.path)
                        if value is not None:
                            pairs.append((prefix + entry.name, value))
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
