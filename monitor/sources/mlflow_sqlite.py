"""The MLflow SQLite store (`mlflow.db`, or any `*.db` holding MLflow's tables): which runs a
database holds, and MlflowDbSource, the reader of one of them.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from monitor.sources.base import (
    RunLocation,
    SourceRead,
    median_interval,
)
from monitor.sources.mlflow_rows import (
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
from monitor.sources.parse import MAX_STEP
from monitor.sources.sqlite_files import (
    FILE_LOCK,
    common_os_error,
    has_sqlite_magic,
    read_head,
    sqlite_code,
)
from monitor.text import utf8_text

DB_SUFFIX = ".db"
BUSY_TIMEOUT_S = 0.2  # a commit under way holds the lock for ms: retry on the next poll
STATEMENT_DEADLINE_S = 10.0  # no honest statement here takes this long: a hostile DB might
# Rows per statement: how long one read may hold up the writer's commit. 2,000 held the lock
# up to 252 ms when another thread of the process was busy (sqlite3 takes the GIL back between
# rows while the statement stays open); 250 kept it under 40 ms (bench_sources.py, MLflow).
BATCH_ROWS = 250
FLUSH_ENTRIES = 1 << 18  # values collected before they are turned into rows
MAX_RUNS_PER_DB = 10_000
PEEK_ROWS = 8000  # newest rows looked at for the step interval (~200 steps of ~40 keys)
DOUBLE_MAX = 1.7976931348623157e308  # what MLflow stores for ±Infinity

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


# -- discovery -------------------------------------------------------------------------------


@dataclass
class _Catalog:
    stamp: tuple[Any, ...]
    names: dict[str, str]  # run id → run name, oldest run first


# Discovery asks about every *.db every ~10 s: a database that did not change is not opened.
_catalogs: dict[str, _Catalog] = {}
_catalogs_lock = threading.Lock()


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
    if not has_sqlite_magic(path):
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


def _db_stamp(path: Path) -> tuple[Any, ...] | None:
    """Changes with every commit: the file's stat, and the header's file change counter
    (bytes 24-27, bumped by each commit in rollback-journal mode: two commits within one
    mtime tick that add no page still differ), and the WAL's stat for a WAL database."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    head = read_head(path, _HEADER_BYTES)  # under FILE_LOCK: see sqlite_files
    counter = head[_COUNTER_AT:_HEADER_BYTES] if head is not None else None
    wal = _stat_pair(Path(f"{path}-wal"))
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, counter, wal)


_COUNTER_AT, _HEADER_BYTES = 24, 28


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
            with FILE_LOCK:  # no raw close of this file while the statement holds its lock
                cursor = self.conn.execute(sql, args)
                try:
                    return cursor.fetchall()  # all rows: the statement ends, its lock goes
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


def _os_error(error: sqlite3.Error, path: Path) -> OSError:
    """An sqlite3 error as the OSError a Run reports (naming the file)."""
    common = common_os_error(error, path)
    if common is not None:
        return common
    code = sqlite_code(error)
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
