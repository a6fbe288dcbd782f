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

import errno
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from monitor.parse import Problem
from monitor.sources.base import MAX_PROBLEMS_PER_READ, RunLocation, Source, SourceRead
from monitor.sources.klwatch import _is_file
from monitor.sources.rows import RowMerger, as_number, as_step

FORMAT = "trackio"
DB_SUFFIX = ".db"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 0.2  # a locked database must not hang a page: retry on the next refresh
BATCH_ROWS = 50_000  # rows per query: bounds memory, and the time a shared lock is held
GLOBAL_STEP_KEY = "train/global_step"  # transformers' TrackioCallback
TIME_COLUMN = "time"
_METRICS_COLUMNS = frozenset({"id", "timestamp", "run_name", "step", "metrics"})
_CONFIGS_COLUMNS = frozenset({"run_name", "config"})
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_SQLITE_READONLY_DIRECTORY = 1544  # (SQLITE_READONLY | 6<<8): cannot create -wal/-shm

# New rows of one run, in order. `+run_name`: keep the planner on the rowid range even if
# an index on run_name ever exists (the range holds only rows added since the last read).
_NEW_ROWS = (
    "SELECT id, timestamp, step, metrics FROM metrics"
    " WHERE id > ? AND id <= ? AND +run_name = ? ORDER BY id LIMIT ?"
)
_CONFIG = "SELECT config FROM configs WHERE run_name = ? ORDER BY id DESC LIMIT 1"


class DatabaseBusy(OSError):
    """The writer holds a lock (or the file changed under an unlocked read): retry later."""

    def __init__(self, path: Path, detail: str = "database busy: will retry") -> None:
        super().__init__(errno.EBUSY, detail, str(path))


# -- discovery -------------------------------------------------------------------------------


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    found: list[RunLocation] = []
    for entry in entries:
        if entry.name.endswith(DB_SUFFIX) and _is_file(entry):
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
        if not _has_sqlite_magic(path):
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


def _has_sqlite_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _wal_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(f"{path}-wal")
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# -- opening -----------------------------------------------------------------------------------


def _connect(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection and whether it is an unlocked (immutable) one.

    Raises OSError: FileNotFoundError if there is no database, DatabaseBusy if locked.
    """
    os.stat(path)  # a missing database is FileNotFoundError naming it, not "unable to open"
    uri = path.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                           check_same_thread=False)  # fmt: skip
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the file
        return conn, False
    except sqlite3.Error as e:
        conn.close()
        # A WAL database in a directory we may not write to (a read-only share): without
        # a -wal file no writer is live, so reading the file as it stands is safe enough,
        # and the caller checks that the file did not change while it read.
        if _code(e) == _SQLITE_READONLY_DIRECTORY and not os.path.exists(f"{path}-wal"):
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=False)  # fmt: skip
            return conn, True
        raise _os_error(e, path) from e


def _code(error: sqlite3.Error) -> int | None:
    return getattr(error, "sqlite_errorcode", None)


def _os_error(error: sqlite3.Error, path: Path) -> OSError:
    """An sqlite3 error as the OSError a Run reports (naming the file)."""
    code = _code(error)
    if code is not None and code & 0xFF in _BUSY_CODES:
        return DatabaseBusy(path)
    if code is not None and code & 0xFF in _CORRUPT_CODES:
        return OSError(errno.EIO, f"not a readable SQLite database ({error})", str(path))
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
        before = self._stat_or_none() if self._immutable else None
        conn = self._connection(out)
        if self._immutable:
            before = before or self._stat_or_none()
        saved = (self._last_id, self._merger.last, self._uses_global_step)
        try:
            top = conn.execute("SELECT max(id) FROM metrics").fetchone()[0] or 0
            if top < self._last_id:  # ids went back: the database was rebuilt
                self._start_over()
                out.reset = "database rows were renumbered: read again from the start"
            while self._last_id < top:
                rows = conn.execute(_NEW_ROWS, (self._last_id, top, self.run_name, BATCH_ROWS))
                batch = rows.fetchall()
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
            raise _os_error(e, self.path) from e
        if self._immutable:
            self._close()  # an unlocked snapshot is never reused
            if self._stat_or_none() != before:
                self._last_id, self._merger.last, self._uses_global_step = saved
                raise DatabaseBusy(self.path, "database changed while read unlocked: will retry")
        return out

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
        values: dict[str, float] = {}
        for name, value in metrics.items():
            number = as_number(value)
            if number is not None:
                values[name] = number
        when = _unix_time(timestamp)
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
            conn, immutable = _connect(self.path)
            try:
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
            try:
                times.append(p.stat().st_mtime)
            except OSError:
                pass
        return max(times, default=None)

    def peek_last_step(self) -> int | None:
        """The step of the run's newest row: one indexed probe, no JSON beyond one row."""
        try:
            conn, _ = _connect(self.path)
        except OSError:
            return None
        try:
            row = conn.execute(
                "SELECT step, metrics FROM metrics WHERE +run_name = ? ORDER BY id DESC LIMIT 1",
                (self.run_name,),
            ).fetchone()
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


def _unix_time(text: object) -> float | None:
    """trackio's ISO 8601 timestamps ("2025-01-01T12:00:00.123456+00:00") as unix seconds."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:  # trackio writes UTC; a naive stamp is taken as UTC too
        return when.replace(tzinfo=_UTC).timestamp()
    return when.timestamp()


_UTC = datetime.now().astimezone().tzinfo.__class__  # placeholder, replaced below
from datetime import timezone as _tz  # noqa: E402

_UTC = _tz.utc
