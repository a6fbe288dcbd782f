"""Reading SQLite databases that someone else writes, from a process with several threads.

POSIX record locks belong to the process, not the descriptor: closing *any* descriptor of a
file drops every lock the process holds on it — a read lock another thread's SQLite
statement holds included. The writer then commits under that statement, which reads
"database disk image is malformed". So every raw read of a database file here (its magic,
its change counter) and every statement klwatch's own connections run take `FILE_LOCK`: a raw
close never happens while one of our statements holds a lock. (SQLite's own opens and closes
are safe: it keeps one descriptor per file per process and defers closes.)
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from pathlib import Path

from monitor.sources.tail import open_regular

SQLITE_MAGIC = b"SQLite format 3\x00"
FILE_LOCK = threading.RLock()


def read_head(path: Path, size: int) -> bytes | None:
    """The first `size` bytes of a database file (None if it cannot be read), under
    FILE_LOCK; only a regular file is opened (a FIFO named *.db must not block discovery)."""
    try:
        with FILE_LOCK, open_regular(path) as f:
            return f.read(size)
    except OSError:
        return None


BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class DatabaseBusy(OSError):
    """The writer holds a lock (or the file changed under an unlocked read): the next poll
    reads on."""

    def __init__(self, path: Path, detail: str = "database busy: will retry") -> None:
        super().__init__(errno.EBUSY, detail, str(path))


def sqlite_code(error: sqlite3.Error) -> int | None:
    """The SQLite (extended) result code of an error, when Python gives it."""
    return getattr(error, "sqlite_errorcode", None)


def common_os_error(error: sqlite3.Error, path: Path) -> OSError | None:
    """What any SQLite reader reports for a lock held (DatabaseBusy: retry) or a damaged
    file; None for the errors each format words itself (trackio, MLflow)."""
    code = sqlite_code(error)
    if code is not None and code & 0xFF in BUSY_CODES:
        return DatabaseBusy(path)
    if code is not None and code & 0xFF in CORRUPT_CODES:
        return OSError(errno.EIO, f"not a readable SQLite database ({error})", str(path))
    return None


def has_sqlite_magic(path: Path) -> bool:
    head = read_head(path, len(SQLITE_MAGIC))
    return head == SQLITE_MAGIC
