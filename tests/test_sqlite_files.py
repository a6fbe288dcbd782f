"""Raw reads of a database file never close a descriptor while one of klwatch's statements
holds a lock on it (POSIX drops a process's locks on any close: monitor/sources/sqlite_files)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from monitor.sources import sqlite_files
from monitor.sources.mlflow_sqlite import _Database


def test_a_raw_read_waits_for_a_statement_in_another_thread(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    done = threading.Event()
    with sqlite_files.FILE_LOCK:  # a statement of ours is running in this thread
        reader = threading.Thread(target=lambda: (sqlite_files.has_sqlite_magic(db), done.set()))
        reader.start()
        time.sleep(0.2)
        assert not done.is_set()  # the raw open/close waits
    reader.join(5)
    assert done.is_set()


def test_mlflow_statements_run_under_the_file_lock(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "m.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    seen: list[bool] = []
    database = _Database(db)
    real = database.conn

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def execute(self, *args: object) -> sqlite3.Cursor:
            # held by this thread: another thread cannot take it
            other = threading.Thread(
                target=lambda: seen.append(sqlite_files.FILE_LOCK.acquire(timeout=0.05))
            )
            other.start()
            other.join()
            return real.execute(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(database, "conn", Spy())
    assert database.query("SELECT count(*) FROM t") == [(0,)]
    assert seen == [False]
    database.close()
