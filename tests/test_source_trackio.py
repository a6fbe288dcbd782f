"""trackio's SQLite databases, written by the real `trackio` package (0.43).

The writer is kept local and quiet: TRACKIO_DIR is the test's tmp_path (trackio reads it
once at import, so the module globals are pointed there too), TRACKIO_STORAGE_MODE=sqlite
(on a network filesystem trackio would write JSONL fragments instead), HF_HUB_OFFLINE=1 and
no Space / server / bucket / dataset variables (those are the only paths to the network),
`embed=False` (no dashboard), no GPU/CPU monitor threads.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from monitor.sources import find_runs, locate_path, open_source
from monitor.sources import trackio as trackio_source
from monitor.sources.base import RunLocation, SourceRead
from monitor.sources.trackio import DatabaseBusy, TrackioSource, locate_file
from monitor.table import SeriesTable

_REMOTE_VARIABLES = (
    "TRACKIO_SPACE_ID",
    "TRACKIO_SERVER_URL",
    "TRACKIO_BUCKET_ID",
    "TRACKIO_DATASET_ID",
    "TRACKIO_WRITE_TOKEN",
    "SPACE_REPO_NAME",
    "SPACE_ID",
    "TRACKIO_SQLITE_JOURNAL_MODE",
    "TRACKIO_SQLITE_LOCKING_MODE",
)


@pytest.fixture
def trackio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path))
    monkeypatch.setenv("TRACKIO_STORAGE_MODE", "sqlite")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in _REMOTE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    import trackio as module
    import trackio.sqlite_storage
    import trackio.utils

    for mod in (module, trackio.utils, trackio.sqlite_storage):
        if hasattr(mod, "TRACKIO_DIR"):
            monkeypatch.setattr(mod, "TRACKIO_DIR", tmp_path)
    monkeypatch.setattr(trackio.utils, "MEDIA_DIR", tmp_path / "media")
    yield module
    if module.context_vars.current_run.get() is not None:
        module.finish()


def start(trackio: ModuleType, project: str, name: str, **kwargs: Any) -> Any:
    return trackio.init(
        project=project,
        name=name,
        embed=False,
        auto_log_gpu=False,
        auto_log_cpu=False,
        **kwargs,
    )


def rows(read: SourceRead) -> tuple[list[int], dict[str, np.ndarray]]:
    """A read's blocks joined: steps and columns (NaN where a block lacks a column)."""
    names = {name: None for block in read.blocks for name in block.columns}
    steps = [int(s) for block in read.blocks for s in block.steps]
    columns = {
        name: np.concatenate(
            [b.columns.get(name, np.full(b.n, np.nan)) for b in read.blocks] or [np.zeros(0)]
        )
        for name in names
    }
    return steps, columns


def read_until(source: TrackioSource, count: int, timeout: float = 10.0) -> list[int]:
    """Read until `count` more rows arrived (trackio's writer thread flushes every 0.5 s;
    the database itself appears with the first flush)."""
    steps: list[int] = []
    deadline = time.monotonic() + timeout
    while len(steps) < count and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            steps += rows(source.read())[0]
        time.sleep(0.05)
    return steps


def trl_log(step: int, kl: float) -> dict[str, float]:
    """What transformers' TrackioCallback.on_log hands trackio.log (no step=)."""
    return {"train/kl": kl, "train/reward": 0.5, "train/global_step": step}


def test_reads_a_finished_run(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "ppo", "run-a", config={"beta": 0.04, "learning_rate": 1e-6})
    for i in range(1, 6):
        metrics = trl_log(10 * i, 0.01 * i)
        metrics.update({"train/grad_norm": math.nan if i == 2 else -math.inf, "flag": True})
        metrics["note"] = "text"
        trackio.log(metrics)
    trackio.finish()
    db = tmp_path / "ppo.db"
    (location,) = locate_file(db)
    assert location == RunLocation("trackio", db, key="run-a")
    source = open_source(location)
    t0 = time.time()
    read = source.read()
    steps, columns = rows(read)
    assert steps == [10, 20, 30, 40, 50]  # the Trainer's step, not trackio's counter 0..4
    assert read.skipped == 0 and not read.problems
    np.testing.assert_allclose(columns["train/kl"], [0.01, 0.02, 0.03, 0.04, 0.05])
    assert math.isnan(columns["train/grad_norm"][1]) and columns["train/grad_norm"][0] == -math.inf
    assert "flag" not in columns and "note" not in columns  # not numbers
    assert np.all(np.abs(columns["time"] - t0) < 60)  # unix seconds from trackio's ISO stamps
    assert source.refresh_info()
    assert source.info["name"] == "run-a"
    assert source.info["config"]["beta"] == 0.04
    assert source.peek_last_step() == 50
    assert source.read().blocks == []  # nothing new
    assert not source.refresh_info()


def test_live_run_only_new_rows(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "live", "run-1")
    for step in (1, 2, 3):
        trackio.log(trl_log(step, 0.1))
    source = TrackioSource(RunLocation("trackio", tmp_path / "live.db", key="run-1"))
    assert read_until(source, 3) == [1, 2, 3]
    for step in (4, 5):
        trackio.log(trl_log(step, 0.2))
    assert read_until(source, 2) == [4, 5]  # only what was added
    trackio.finish()
    assert source.read().blocks == []


def test_two_runs_in_one_database(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "sweep", "beta-0.01")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    start(trackio, "sweep", "beta-0.1")
    trackio.log(trl_log(1, 0.5))
    trackio.log(trl_log(2, 0.6))
    trackio.finish()
    db = tmp_path / "sweep.db"
    found = locate_file(db)
    assert [loc.key for loc in found] == ["beta-0.01", "beta-0.1"]
    assert [loc for loc in find_runs(tmp_path) if loc.format == "trackio"] == found
    assert locate_path(db) == found
    first, second = (TrackioSource(loc) for loc in found)
    assert rows(first.read())[0] == [1]
    assert rows(second.read())[0] == [1, 2]
    start(trackio, "sweep", "beta-0.01", resume="allow")  # more rows for the first run
    trackio.log(trl_log(2, 0.2))
    trackio.finish()
    assert rows(first.read())[0] == [2]
    assert rows(second.read())[0] == []


def test_step_without_global_step(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "plain", "r")
    trackio.log({"kl": 0.1})
    trackio.log({"kl": 0.2})
    trackio.log({"kl": 0.3}, step=10)
    trackio.finish()
    source = TrackioSource(RunLocation("trackio", tmp_path / "plain.db", key="r"))
    assert rows(source.read())[0] == [0, 1, 10]  # trackio's own step column


def test_logs_at_one_global_step_merge(trackio: ModuleType, tmp_path: Path) -> None:
    # The Trainer logs train and eval metrics separately at the same global step; an eval
    # through on_predict carries no global step at all: all are one row, not a resume.
    start(trackio, "merge", "r")
    trackio.log({"train/kl": 0.1, "train/global_step": 10})
    trackio.log({"eval/loss": 1.5, "train/global_step": 10})
    trackio.log({"train/kl": 0.2, "train/global_step": 20})
    trackio.finish()
    source = TrackioSource(RunLocation("trackio", tmp_path / "merge.db", key="r"))
    steps, columns = rows(source.read())
    assert steps == [10, 20]
    assert columns["train/kl"].tolist() == [0.1, 0.2]
    assert columns["eval/loss"][0] == 1.5 and math.isnan(columns["eval/loss"][1])
    start(trackio, "merge", "r", resume="allow")
    trackio.log({"test/accuracy": 0.9})  # no train/global_step
    trackio.finish()
    steps, columns = rows(source.read())
    assert steps == [20]  # the last step again, now with both logs' values
    assert columns["train/kl"][0] == 0.2 and columns["test/accuracy"][0] == 0.9


def test_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    assert locate_file(missing) == []
    source = TrackioSource(RunLocation("trackio", missing, key="r"))
    with pytest.raises(FileNotFoundError) as caught:
        source.read()
    assert caught.value.filename == str(missing)
    assert source.peek_last_step() is None and source.last_write_time() is None
    source.refresh_info()  # never raises: says why instead
    assert source.info_problem and "nothing.db" in source.info_problem


def test_corrupt_database(trackio: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite\n" * 100)
    start(trackio, "good", "r")
    for i in range(300):
        trackio.log({"kl": 0.1, "padding": "x" * 200, "train/global_step": i})
    trackio.finish()
    whole = (tmp_path / "good.db").read_bytes()
    # A header that promises pages the file no longer has: "database disk image is malformed".
    (tmp_path / "cut.db").write_bytes(whole[: len(whole) // 3])
    assert locate_file(tmp_path / "garbage.db") == []
    for name in ("garbage.db", "cut.db"):
        source = TrackioSource(RunLocation("trackio", tmp_path / name, key="r"))
        with pytest.raises(OSError) as caught:
            source.read()
        assert not isinstance(caught.value, sqlite3.Error)
        assert name in str(caught.value)


def test_busy_database_is_retried(
    trackio: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # trackio's journal is WAL unless told otherwise (DELETE on Spaces); only a rollback
    # journal lets a writer lock readers out.
    monkeypatch.setenv("TRACKIO_SQLITE_JOURNAL_MODE", "delete")
    start(trackio, "locked", "r")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    db = tmp_path / "locked.db"
    found = locate_file(db)
    source = TrackioSource(found[0])
    assert rows(source.read())[0] == [1]
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        with pytest.raises(DatabaseBusy, match="database busy: will retry"):
            source.read()
        assert time.monotonic() - t0 < 2  # a short busy timeout: the page does not hang
        assert locate_file(db) == found  # unchanged file: known names, without asking
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    start(trackio, "locked", "r", resume="allow")
    trackio.log(trl_log(2, 0.2))
    trackio.finish()
    assert rows(source.read())[0] == [2]  # the earlier rows are not read twice


def test_wal_writer_never_locks_the_reader_out(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "wal", "r")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    db = tmp_path / "wal.db"
    source = TrackioSource(RunLocation("trackio", db, key="r"))
    assert rows(source.read())[0] == [1]
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(
            "INSERT INTO metrics (run_id, timestamp, run_name, step, metrics)"
            " SELECT run_id, timestamp, run_name, 2, ? FROM metrics LIMIT 1",
            (b'{"train/kl": 0.2, "train/global_step": 2}',),
        )
        assert source.read().blocks == []  # reads; does not see the uncommitted row
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert rows(source.read())[0] == [2]


def test_bad_metrics_rows_skipped_and_counted(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "bad", "r")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    db = tmp_path / "bad.db"
    writer = sqlite3.connect(db)
    insert = (
        "INSERT INTO metrics (run_id, timestamp, run_name, step, metrics)"
        " SELECT run_id, timestamp, run_name, ?, ? FROM metrics LIMIT 1"
    )
    with writer:
        writer.execute(insert, (1, b"not json"))
        writer.execute(insert, (2, b"[1, 2]"))
        writer.execute(insert, (3, b'{"train/kl": 0.3, "train/global_step": 3}'))
    writer.close()
    source = TrackioSource(RunLocation("trackio", db, key="r"))
    read = source.read()
    assert rows(read)[0] == [1, 3]
    assert read.skipped == 2
    assert [p.reason for p in read.problems] == [
        "row id 2: metrics is not a JSON object",
        "row id 3: metrics is not a JSON object",
    ]
    assert all(p.file == "bad.db" for p in read.problems)


def test_discovery_is_cached_and_incremental(
    trackio: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(trackio, "cache", "first")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    db = tmp_path / "cache.db"
    assert [loc.key for loc in locate_file(db)] == ["first"]
    opened: list[Path] = []
    real_connect = trackio_source._connect

    def counting_connect(path: Path) -> tuple[sqlite3.Connection, bool]:
        opened.append(path)
        return real_connect(path)

    monkeypatch.setattr(trackio_source, "_connect", counting_connect)
    assert [loc.key for loc in locate_file(db)] == ["first"]
    assert opened == []  # unchanged file and WAL: the database is not opened
    start(trackio, "cache", "second")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    assert [loc.key for loc in locate_file(db)] == ["first", "second"]
    assert opened == [db]


def test_not_trackio_databases_are_ignored(tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "optuna.db")
    other.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, value REAL)")
    other.commit()
    other.close()
    (tmp_path / "notes.db").write_text("not a database")
    assert locate_file(tmp_path / "optuna.db") == []
    assert locate_file(tmp_path / "notes.db") == []
    assert list(find_runs(tmp_path)) == []


def test_replaced_database_is_read_again(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "again", "r")
    trackio.log(trl_log(1, 0.1))
    trackio.log(trl_log(2, 0.1))
    trackio.finish()
    db = tmp_path / "again.db"
    source = TrackioSource(RunLocation("trackio", db, key="r"))
    assert rows(source.read())[0] == [1, 2]
    trackio.delete_project("again", force=True)
    start(trackio, "again", "r")
    trackio.log(trl_log(1, 0.3))
    trackio.finish()
    read = source.read()
    assert read.reset and rows(read)[0] == [1]


def test_new_rows_are_found_by_id_range(trackio: ModuleType, tmp_path: Path) -> None:
    start(trackio, "plan", "r")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    conn = sqlite3.connect(f"{(tmp_path / 'plan.db').as_uri()}?mode=ro", uri=True)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN " + trackio_source._NEW_ROWS, (0, 10, "r", 100)
    ).fetchall()
    conn.close()
    details = " ".join(row[-1] for row in plan)
    assert "INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in details, details


def sweep_rows(count: int) -> list[dict[str, Any]]:
    """TRL-shaped logs: train rows, eval rows at the same global step every 7th step, NaN,
    ±inf, a bool and a string, and a metric that appears late."""
    logs: list[dict[str, Any]] = []
    for step in range(1, count + 1):
        kl = math.nan if step % 11 == 0 else 0.001 * step
        row: dict[str, Any] = {"train/kl": kl, "train/global_step": step, "done": False}
        if step % 13 == 0:
            row["train/grad_norm"] = math.inf if step % 2 else -math.inf
        if step > count // 2:
            row["train/late"] = 1.0
        logs.append(row)
        if step % 7 == 0:
            logs.append({"eval/reward": 0.5, "eval/tag": "x", "train/global_step": step})
    return logs


def as_table(read: SourceRead) -> SeriesTable:
    """What a Run keeps of a read: later rows at a step supersede earlier ones."""
    table = SeriesTable()
    for block in read.blocks:
        table.append(block)
    return table


@pytest.mark.parametrize("batch_rows", [50_000, 97])
def test_batch_parse_matches_row_by_row(
    trackio: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    from trackio.sqlite_storage import SQLiteStorage

    logs = sweep_rows(400)
    SQLiteStorage.bulk_log(project="fast", run="r", run_id="r", metrics_list=logs[:300])
    SQLiteStorage.bulk_log(project="fast", run="r", run_id="r", metrics_list=logs[300:])
    location = RunLocation("trackio", tmp_path / "fast.db", key="r")
    monkeypatch.setattr(trackio_source, "BATCH_ROWS", batch_rows)  # 97: eval rows straddle
    monkeypatch.setattr(trackio_source, "FAST_MIN_ROWS", 1)
    row_by_row = TrackioSource._add_row
    calls: list[int] = []

    def counting_add_row(self: TrackioSource, *args: Any) -> None:
        calls.append(1)
        row_by_row(self, *args)

    monkeypatch.setattr(TrackioSource, "_add_row", counting_add_row)
    fast = as_table(TrackioSource(location).read())
    assert calls == []  # every batch took the one-parse path
    monkeypatch.setattr(trackio_source, "FAST_MIN_ROWS", 10**9)
    slow = as_table(TrackioSource(location).read())
    assert len(calls) == len(logs)
    assert fast.steps.tolist() == slow.steps.tolist() == list(range(1, 401))
    assert sorted(fast.names) == sorted(slow.names)
    for name in slow.names:
        np.testing.assert_array_equal(fast.column(name), slow.column(name), err_msg=name)
    assert "done" not in fast.names and "eval/tag" not in fast.names
    assert fast.column("eval/reward")[6] == 0.5  # merged into step 7's row
    assert fast.column("train/grad_norm")[12] == math.inf


class _ReadOnlyDirectory:
    """sqlite3.connect as seen from a read-only directory: a `mode=ro` open of a WAL
    database cannot create its -wal/-shm files (verified as a non-root user: SQLite 3.40
    raises SQLITE_READONLY_DIRECTORY, and `immutable=1` reads)."""

    def __init__(self) -> None:
        self.real = sqlite3.connect
        self.uris: list[str] = []

    def __call__(self, database: str, *args: Any, **kwargs: Any) -> Any:
        self.uris.append(database)
        if "immutable=1" in database:
            return self.real(database, *args, **kwargs)
        return _Refusing()


class _Refusing:
    """A connection whose first statement fails as SQLite fails it there."""

    def execute(self, *args: Any) -> Any:
        error = sqlite3.OperationalError("attempt to write a readonly database")
        error.sqlite_errorcode = 1544  # type: ignore[attr-defined]  # READONLY_DIRECTORY
        raise error

    def close(self) -> None:
        pass


def test_read_only_directory_without_writer_reads_immutable(
    trackio: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(trackio, "share", "r")
    trackio.log(trl_log(1, 0.1))
    trackio.finish()
    db = tmp_path / "share.db"
    for sidecar in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        sidecar.unlink(missing_ok=True)
    fake = _ReadOnlyDirectory()
    monkeypatch.setattr(sqlite3, "connect", fake)
    source = TrackioSource(RunLocation("trackio", db, key="r"))
    assert rows(source.read())[0] == [1]
    assert any("immutable=1" in uri for uri in fake.uris)
    assert source._conn is None  # an unlocked snapshot is not kept
    Path(f"{db}-wal").write_bytes(b"")  # a writer may be live: no unlocked reads
    with pytest.raises(OSError, match="cannot write to"):
        TrackioSource(RunLocation("trackio", db, key="r")).read()


def test_a_database_whose_tables_are_still_being_made_reads_as_nothing_yet(
    tmp_path: Path,
) -> None:
    """trackio creates the file, then its tables one by one: a reader in between sees a
    schema without `metrics`. Fresh, that is "not yet"; left so, it is not trackio's."""
    import os

    db = tmp_path / "half.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE configs (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    source = TrackioSource(RunLocation("trackio", db, key="run-1"))
    assert source.read().blocks == []  # written just now: being created
    old = time.time() - 60
    os.utime(db, (old, old))
    source = TrackioSource(RunLocation("trackio", db, key="run-1"))
    with pytest.raises(OSError, match="not a trackio database"):
        source.read()
