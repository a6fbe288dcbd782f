"""trackio's local SQLite databases: `$TRACKIO_DIR/<project>.db` (default
`$HF_HOME/trackio`, i.e. ~/.cache/huggingface/trackio), one database per project.

What trackio 0.43 writes (trackio/sqlite_storage.py, SQLiteStorage.init_db / bulk_log):

* table `metrics(id INTEGER PRIMARY KEY AUTOINCREMENT, run_id, timestamp TEXT, run_name,
  step INTEGER, metrics TEXT, log_id, space_id)`: one row per `trackio.log()`; `metrics` is
  `orjson.dumps(serialize_values(...))` (stored as a BLOB) with NaN / ±Infinity as the
  strings "NaN" / "Infinity" / "-Infinity"; `timestamp` is an ISO 8601 UTC string, one per
  flushed batch (the writer thread flushes every 0.5 s);
* table `configs(id, run_id, run_name, config TEXT, created_at)`: the run's config plus
  `_Username`, `_Created`, `_Group`, written with the run's first batch;
* indexes only on (run_id, step), (run_id, timestamp), (run_id, run_name, timestamp) and
  configs(run_name): nothing on run_name alone, so new rows are found by id range (the
  rowid B-tree), never by scanning a run;
* journal_mode WAL (DELETE on Spaces or with TRACKIO_SQLITE_JOURNAL_MODE); each flush opens
  and closes its own connection.

One run here is one `run_name` of one database (RunLocation.key). A second trackio run with
the same name (resume="never") starts its steps again: that reads as a resume, which is
what the table makes of it. TRL / transformers' TrackioCallback calls `trackio.log(logs)`
without `step=` and puts the Trainer's step in "train/global_step": that is the step when
present, else trackio's own counter.

Reading never writes or locks out the writer: `mode=ro` (not `immutable=1`, which would
read a live database without locks), a 0.2 s busy timeout, no transaction held between
reads. A read-only WAL reader still needs the -wal/-shm files; where the directory is
read-only and trackio is not running (no -wal file), the database is read as immutable and
the read is discarded if the file changed meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from monitor.sources.base import (
    MAX_PROBLEMS_PER_READ,
    RunLocation,
    Source,
    SourceRead,
    is_file_entry,
)
from monitor.sources.parse import (
    ParsedBlock,
    Problem,
    nests_too_deep,
    numeric_column,
    read_json_table,
)
from monitor.sources.rows import RowMerger, as_step, merge_equal_steps, numbers
from monitor.sources.sqlite_files import (
    FILE_LOCK,
    DatabaseBusy,
    common_os_error,
    has_sqlite_magic,
    sqlite_code,
)

FORMAT = "trackio"
DB_SUFFIX = ".db"
BUSY_TIMEOUT_S = 0.2  # a locked database must not hang a page: retry on the next refresh
BATCH_ROWS = 50_000  # rows per query: bounds memory, and the time a shared lock is held
FAST_MIN_ROWS = 1000  # below this (a live refresh), row by row is faster
# trackio's serialize_values writes non-finite floats as these strings. As values they
# follow a colon (orjson writes no spaces); a key "NaN" does not, and quotes inside a
# string are escaped. The bare tokens they become are floats to pyarrow's JSON reader.
_SPECIAL_FLOATS = (
    (b':"NaN"', b":NaN"),
    (b':"Infinity"', b":Infinity"),
    (b':"-Infinity"', b":-Infinity"),
)
GLOBAL_STEP_KEY = "train/global_step"  # transformers' TrackioCallback
TIME_COLUMN = "time"
_METRICS_COLUMNS = frozenset({"id", "timestamp", "run_name", "step", "metrics"})
_CONFIGS_COLUMNS = frozenset({"run_name", "config"})
_SQLITE_READONLY_DIRECTORY = 1544  # (SQLITE_READONLY | 6<<8): cannot create -wal/-shm

# New rows of one run, in order. `+run_name`: keep the planner on the rowid range even if
# an index on run_name ever exists (the range holds only rows added since the last read).
_NEW_ROWS = (
    "SELECT id, timestamp, step, metrics FROM metrics"
    " WHERE id > ? AND id <= ? AND +run_name = ? ORDER BY id LIMIT ?"
)
_CONFIG = "SELECT config FROM configs WHERE run_name = ? ORDER BY id DESC LIMIT 1"


# -- discovery -------------------------------------------------------------------------------


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    found: list[RunLocation] = []
    for entry in entries:
        if entry.name.endswith(DB_SUFFIX) and is_file_entry(entry):
            found.extend(locate_file(Path(entry.path)))
    return found


def locate_file(path: Path) -> list[RunLocation]:
    """One location per run name in a trackio database; [] for anything else."""
    if not path.name.endswith(DB_SUFFIX):
        return []
    return [RunLocation(FORMAT, path, key=name) for name in run_names(path)]


@dataclass
class _Catalog:
    """The run names of one database as of `stamp`, and how far its rows were scanned."""

    stamp: tuple[Any, ...]
    identity: tuple[int, int]
    last_id: int
    names: dict[str, None]  # first-seen order
    is_trackio: bool


# Discovery runs every ~10 s over every database: a database whose file and WAL did not
# change is not opened at all, and one that did is asked only about rows added since.
_catalogs: dict[str, _Catalog] = {}
_catalogs_lock = threading.Lock()
_MAX_CATALOGS = 10_000


def run_names(path: Path) -> list[str]:
    """The run names in a trackio database, [] if it is not one (or cannot be read now)."""
    key = str(path)
    try:
        st = os.stat(path)
    except OSError:
        return []
    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, _wal_stamp(path))
    identity = (st.st_dev, st.st_ino)
    with _catalogs_lock:
        known = _catalogs.get(key)
    if known is not None and known.stamp == stamp:
        return list(known.names)
    if known is not None and (known.identity != identity or not known.is_trackio):
        known = None  # replaced, or not trackio before: look again from scratch
    try:
        catalog = _scan_names(path, stamp, identity, known)
    except (OSError, sqlite3.Error):
        # Busy or mid-write: keep what was known; unreadable or corrupt: not a run list.
        return list(known.names) if known is not None else []
    with _catalogs_lock:
        if len(_catalogs) >= _MAX_CATALOGS:
            _catalogs.clear()
        _catalogs[key] = catalog
    return list(catalog.names)


def _scan_names(
    path: Path, stamp: tuple[Any, ...], identity: tuple[int, int], known: _Catalog | None
) -> _Catalog:
    if known is None:
        if not has_sqlite_magic(path):
            return _Catalog(stamp, identity, 0, {}, False)
        conn, _ = _connect(path)
        try:
            if not is_trackio_schema(conn):
                return _Catalog(stamp, identity, 0, {}, False)
            return _add_names(conn, _Catalog(stamp, identity, 0, {}, True))
        finally:
            conn.close()
    conn, _ = _connect(path)
    try:
        return _add_names(conn, _Catalog(stamp, identity, known.last_id, dict(known.names), True))
    finally:
        conn.close()


def _add_names(conn: sqlite3.Connection, catalog: _Catalog) -> _Catalog:
    top = conn.execute("SELECT max(id) FROM metrics").fetchone()[0] or 0
    if top < catalog.last_id:  # rows renumbered: the database was rebuilt
        catalog.last_id, catalog.names = 0, {}
    rows = conn.execute(
        "SELECT DISTINCT run_name FROM metrics WHERE id > ? AND id <= ?", (catalog.last_id, top)
    ).fetchall()
    for (name,) in rows:
        if isinstance(name, str):
            catalog.names.setdefault(name, None)
    catalog.last_id = top
    return catalog


def is_trackio_schema(conn: sqlite3.Connection) -> bool:
    """True if the database has trackio's metrics and configs tables."""
    for table, needed in (("metrics", _METRICS_COLUMNS), ("configs", _CONFIGS_COLUMNS)):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not needed <= columns:
            return False
    return True


def _wal_stamp(path: Path) -> tuple[int, int] | None:
    """The WAL's (mtime, size); None if there is none or it is empty: a read-only reader
    creates an empty -wal where there was none, which is no change to the data."""
    try:
        st = os.stat(f"{path}-wal")
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st.st_size else None


# -- opening -----------------------------------------------------------------------------------


def _connect(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection and whether it is an unlocked (immutable) one.

    Raises OSError: FileNotFoundError if there is no database, DatabaseBusy if locked.
    """
    os.stat(path)  # a missing database is FileNotFoundError naming it, not "unable to open"
    uri = path.absolute().as_uri()
    # check_same_thread=False: a Run is refreshed from the store's reader threads (under
    # the Run's lock, so never two at once).
    conn = sqlite3.connect(
        f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
    )
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the file
        return conn, False
    except sqlite3.Error as e:
        conn.close()
        # A WAL database in a directory we may not write to (a read-only share): without
        # a -wal file no writer is live, so reading the file as it stands is safe enough,
        # and the caller checks that the file did not change while it read.
        if sqlite_code(e) == _SQLITE_READONLY_DIRECTORY and not os.path.exists(f"{path}-wal"):
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            return conn, True
        raise _os_error(e, path) from e


CREATION_GRACE_S = 5.0  # a database this fresh whose tables are not all there is being made


def _is_being_created(path: Path, error: sqlite3.Error) -> bool:
    """True if the database is still being set up: trackio creates the file, then its tables
    one by one, so a reader can come in between — no tables yet, `metrics` created since the
    query failed, or a schema without it in a file written in the last few seconds. (Tables,
    but not trackio's, in a file that stays so, is an error.)"""
    if "no such table" not in str(error):
        return False
    try:
        conn, _ = _connect(path)
    except OSError:
        return False
    try:
        with FILE_LOCK:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    if not names or "metrics" in names:
        return True
    try:
        return time.time() - os.stat(path).st_mtime < CREATION_GRACE_S
    except OSError:
        return False


def _os_error(error: sqlite3.Error, path: Path) -> OSError:
    """An sqlite3 error as the OSError a Run reports (naming the file)."""
    common = common_os_error(error, path)
    if common is not None:
        return common
    code = sqlite_code(error)
    if code == _SQLITE_READONLY_DIRECTORY:
        why = "a WAL database being written, in a directory this reader cannot write to"
        return OSError(errno.EACCES, f"cannot read {why} (SQLite needs its -shm file)", str(path))
    if "no such table" in str(error):
        return OSError(errno.EINVAL, f"not a trackio database ({error})", str(path))
    return OSError(errno.EIO, f"cannot read the trackio database ({error})", str(path))


# -- reading -----------------------------------------------------------------------------------


class TrackioSource(Source):
    format = FORMAT
    label = "trackio"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.run_name = location.key or ""
        self._conn: sqlite3.Connection | None = None
        self._immutable = False
        self._identity: tuple[int, int] | None = None
        self._last_id = 0  # every row with id <= this was looked at (all runs of the file)
        self._merger = RowMerger()
        self._uses_global_step = False  # once a row had it, rows without it share its step
        self._info_stamp: tuple[Any, ...] | None = None
        self._time_cache: tuple[object, float | None] = (None, None)

    # The connection is kept between reads (a page cache, no schema re-parse), and dropped
    # when the file is replaced or a read fails.
    def _connection(self, out: SourceRead) -> sqlite3.Connection:
        st = os.stat(self.path)
        identity = (st.st_dev, st.st_ino)
        if self._identity is not None and identity != self._identity:
            self._close()
            self._start_over()
            out.reset = "database file was replaced: read again from the start"
        if self._conn is None:
            self._conn, self._immutable = _connect(self.path)
            self._identity = identity
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _start_over(self) -> None:
        self._last_id = 0
        self._merger.reset()
        self._uses_global_step = False

    def read(self) -> SourceRead:
        out = SourceRead()
        conn = self._connection(out)
        before = self._stat_or_none() if self._immutable else None
        saved = (self._last_id, self._merger.last, self._uses_global_step)
        try:
            with FILE_LOCK:  # see monitor/sources/sqlite_files.py
                top = conn.execute("SELECT max(id) FROM metrics").fetchone()[0] or 0
            if top < self._last_id:  # ids went back: the database was rebuilt
                self._start_over()
                out.reset = "database rows were renumbered: read again from the start"
            while self._last_id < top:
                with FILE_LOCK:
                    rows = conn.execute(_NEW_ROWS, (self._last_id, top, self.run_name, BATCH_ROWS))
                    batch = rows.fetchall()
                block = self._parse_batch(batch) if len(batch) >= FAST_MIN_ROWS else None
                if block is None:
                    for row_id, timestamp, step, blob in batch:
                        self._add_row(row_id, timestamp, step, blob, out)
                    block = self._merger.take()
                if block is not None:
                    out.blocks.append(block)
                self._last_id = batch[-1][0] if len(batch) == BATCH_ROWS else top
        except sqlite3.Error as e:
            self._close()
            self._last_id, self._merger.last, self._uses_global_step = saved
            self._merger.take()  # drop the half-read batch: it is read again next time
            if _is_being_created(self.path, e):
                return SourceRead()
            raise _os_error(e, self.path) from e
        if self._immutable:
            self._close()  # an unlocked snapshot is never reused
            if self._stat_or_none() != before:
                self._last_id, self._merger.last, self._uses_global_step = saved
                raise DatabaseBusy(self.path, "database changed while read unlocked: will retry")
        return out

    def _parse_batch(self, batch: list[tuple[Any, ...]]) -> ParsedBlock | None:
        """A batch of rows by one pyarrow parse of their metrics (2-3x faster than row by
        row on a cold load, measured on 50k-row batches), or None where only the row-by-row
        path can tell: a bad row, a value that is a number in one row and an object in
        another, rows with and without the Trainer's step mixed."""
        _, stamps, stored, blobs = zip(*batch, strict=True)
        if not all(type(blob) is bytes for blob in blobs):
            return None
        data = b"\n".join(blobs) + b"\n"
        for text, token in _SPECIAL_FLOATS:  # serialize_values' strings → JSON tokens
            data = data.replace(text, token)
        if data.count(b"\n") != len(batch) or nests_too_deep(data):
            return None  # row by row: orjson refuses what nests too deep, pyarrow would crash
        table = read_json_table(data)
        if table is None or table.num_rows != len(batch):
            return None
        columns: dict[str, np.ndarray] = {}
        for name in table.column_names:
            values = numeric_column(table.column(name))
            if values is not None:
                columns[name] = values
        global_step = columns.get(GLOBAL_STEP_KEY)
        if global_step is not None:
            integral = (global_step >= 0) & (global_step == np.floor(global_step))
            if not np.all(integral & (global_step < 2.0**63)):
                return None  # NaN (a row without it), not an integer, beyond int64
            steps = global_step.astype(np.int64)
        elif self._uses_global_step:
            return None
        else:
            steps = np.asarray(stored)
            if steps.dtype.kind not in "iu" or (steps.size and steps.min() < 0):
                return None
            steps = steps.astype(np.int64)
        columns[TIME_COLUMN] = _unix_times(stamps)
        carry = self._merger.last
        if carry is not None and carry[0] == steps[0]:
            # The first rows continue the last row already handed over: merge into it.
            missing = np.full(steps.size, np.nan)
            names = dict.fromkeys([*columns, *carry[1]])
            columns = {
                name: np.r_[carry[1].get(name, np.nan), columns.get(name, missing)]
                for name in names
            }
            steps = np.r_[steps[:1], steps]
        steps, columns = merge_equal_steps(steps, columns)
        self._uses_global_step = self._uses_global_step or global_step is not None
        self._merger.last = (
            int(steps[-1]),
            {name: float(v[-1]) for name, v in columns.items() if not np.isnan(v[-1])},
        )
        return ParsedBlock(steps, columns)

    def _add_row(
        self, row_id: int, timestamp: object, step: object, blob: object, out: SourceRead
    ) -> None:
        try:
            metrics = orjson.loads(blob) if isinstance(blob, bytes | str) else None
        except orjson.JSONDecodeError:
            metrics = None
        if not isinstance(metrics, dict):
            self._skip(out, row_id, "metrics is not a JSON object")
            return
        stored = as_step(step)
        global_step = as_step(metrics.get(GLOBAL_STEP_KEY))
        if global_step is not None:
            self._uses_global_step = True
            use = global_step
        elif self._uses_global_step and self._merger.last is not None:
            use = self._merger.last[0]  # e.g. an eval log without the Trainer's step
        elif stored is not None:
            use = stored
        else:
            self._skip(out, row_id, f"step must be an integer >= 0, got {step!r}")
            return
        values = numbers(metrics)
        if timestamp != self._time_cache[0]:  # a flushed batch shares one timestamp
            self._time_cache = (timestamp, _unix_time(timestamp))
        when = self._time_cache[1]
        if when is not None:
            values[TIME_COLUMN] = when
        self._merger.add(use, values)

    def _skip(self, out: SourceRead, row_id: int, reason: str) -> None:
        out.skipped += 1
        if len(out.problems) < MAX_PROBLEMS_PER_READ:
            out.problems.append(Problem(self.path.name, None, f"row id {row_id}: {reason}"))

    def _stat_or_none(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    # -- metadata --------------------------------------------------------------------------

    def refresh_info(self) -> bool:
        """Re-read the run's config when the database (or its WAL) changed."""
        stamp = self.stamp()
        if stamp == self._info_stamp and self.info:
            return False
        self._info_stamp = stamp
        old = (self.info, self.info_problem)
        info: dict[str, Any] = {"name": self.run_name, "config": {}}
        problem = None
        try:
            conn, _ = _connect(self.path)
            try:
                with FILE_LOCK:
                    row = conn.execute(_CONFIG, (self.run_name,)).fetchone()
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as e:
            self._info_stamp = None  # try again next time
            problem = f"{self.path}: cannot read the run config ({e})"
            row = None
        if row is not None:
            try:
                config = orjson.loads(row[0])
            except (orjson.JSONDecodeError, TypeError):
                config, problem = None, f"{self.path}: config of {self.run_name!r} is not JSON"
            if isinstance(config, dict):
                info["config"] = config
                created = _unix_time(config.get("_Created"))
                if created is not None:
                    info["created"] = created
        self.info, self.info_problem = info, problem
        return (self.info, self.info_problem) != old

    def last_write_time(self) -> float | None:
        times = []
        for p in (self.path, Path(f"{self.path}-wal")):
            with contextlib.suppress(OSError):
                times.append(p.stat().st_mtime)
        return max(times, default=None)

    def peek_last_step(self) -> int | None:
        """The step of the run's newest row: an indexed probe, one row's JSON decoded."""
        try:
            conn, _ = _connect(self.path)
        except OSError:
            return None
        try:
            row = _newest_row(conn, self.run_name)
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        if row is None:
            return None
        try:
            metrics = orjson.loads(row[1])
        except (orjson.JSONDecodeError, TypeError):
            metrics = None
        if isinstance(metrics, dict) and as_step(metrics.get(GLOBAL_STEP_KEY)) is not None:
            return as_step(metrics[GLOBAL_STEP_KEY])
        return as_step(row[0])

    def stamp(self) -> tuple[Any, ...]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (None,)
        return ((st.st_ino, st.st_mtime_ns, st.st_size), _wal_stamp(self.path))

    @property
    def default_name(self) -> str:
        return self.run_name or self.path.stem


def _newest_row(conn: sqlite3.Connection, run_name: str) -> tuple[Any, Any] | None:
    """(step, metrics) of the newest row of a run.

    Through the run's newest run_id (configs, indexed by run_name) and the (run_id, step)
    index; a database without those (older trackio, no config row) is scanned back from
    its newest row instead.
    """
    run_id = None
    if "run_id" in {row[1] for row in conn.execute("PRAGMA table_info(configs)")}:
        found = conn.execute(
            "SELECT run_id FROM configs WHERE run_name = ? ORDER BY id DESC LIMIT 1", (run_name,)
        ).fetchone()
        run_id = found[0] if found else None
    if run_id is not None:
        row = conn.execute(
            "SELECT step, metrics FROM metrics WHERE run_id = ? ORDER BY step DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        if row is not None:
            return row
    return conn.execute(
        "SELECT step, metrics FROM metrics WHERE +run_name = ? ORDER BY id DESC LIMIT 1",
        (run_name,),
    ).fetchone()


def _unix_times(stamps: Sequence[object]) -> np.ndarray:
    """`_unix_time` of many stamps: one Arrow cast (ISO 8601 with its offset), else one
    Python parse per distinct stamp (trackio stamps each flushed batch once)."""
    try:
        micros = pa.array(stamps).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        return micros.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        when = {text: _unix_time(text) for text in set(stamps)}
        return np.array([when[text] for text in stamps], dtype=np.float64)


def _unix_time(text: object) -> float | None:
    """trackio's ISO 8601 timestamps ("2025-01-01T12:00:00.123456+00:00") as unix seconds."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:  # trackio writes UTC; a naive stamp is taken as UTC too
        return when.replace(tzinfo=UTC).timestamp()
    return when.timestamp()
