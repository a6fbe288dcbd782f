"""MLflow runs, written by the real `mlflow` (mlflow-skinny 3.18): its SQLite store and its file
store, read by monitor.sources.mlflow (which never imports mlflow).

mlflow stays local and quiet: a `sqlite:///` or `file://` tracking URI under the test's
tmp_path, telemetry off. MLflow's migrations take seconds, so one empty database is made per
session and copied for each test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from monitor.run import open_run
from monitor.sources import find_runs, locate_path, mlflow_sqlite, open_source
from monitor.sources.base import RunLocation, SourceRead
from monitor.sources.mlflow import (
    MlflowDbSource,
    MlflowDirSource,
    MlflowSource,
    locate_file,
    parse_meta,
)
from monitor.table import SeriesTable

# mlflow 3.18's SQL store configures a loader SQLAlchemy 2.1 deprecates: theirs, not ours
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
STORES = ("sqlite", "file")


# -- the real writer --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database with the Default experiment (MLflow's own migrations)."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    env = {**os.environ, **QUIET_ENV}
    code = "import mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{path}"], env=env, check=True)
    return path


@dataclass
class Store:
    kind: str  # sqlite | file
    root: Path  # what klwatch is pointed at
    uri: str
    mlflow: ModuleType

    def location(self, run_id: str) -> RunLocation:
        """The run as discovery finds it (exactly one location per run id)."""
        found = [loc for loc in find_runs(self.root) if run_id in (loc.key, loc.path.name)]
        assert len(found) == 1, found
        return found[0]

    def source(self, run_id: str) -> MlflowSource:
        source = open_source(self.location(run_id))
        assert isinstance(source, MlflowSource)
        return source

    def run_ids(self) -> list[str]:
        return [loc.key or loc.path.name for loc in find_runs(self.root)]


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    template_db: Path,
) -> Iterator[Store]:
    for name, value in QUIET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow

    if request.param == "sqlite":
        db = tmp_path / "mlflow.db"
        shutil.copy(template_db, db)
        uri = f"sqlite:///{db}"
    else:
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database
        uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield Store(request.param, tmp_path, uri, mlflow)
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def read_all(source: MlflowSource, table: SeriesTable | None = None) -> SourceRead:
    read = source.read()
    if table is not None:
        if read.reset:
            table.clear()
        for block in read.blocks:
            table.append(block)
    return read


def joined(read: SourceRead) -> tuple[list[int], dict[str, np.ndarray]]:
    """A read's blocks joined: steps and columns (NaN where a block lacks a column)."""
    names = {name: None for block in read.blocks for name in block.columns}
    steps = [int(s) for block in read.blocks for s in block.steps]
    columns = {
        name: np.concatenate([b.columns.get(name, np.full(b.n, np.nan)) for b in read.blocks])
        for name in names
    }
    return steps, columns


def same(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> bool:
    return bool(np.array_equal(np.asarray(a, float), np.asarray(b, float), equal_nan=True))


# -- values, names, metadata ------------------------------------------------------------------


def test_values_steps_nan_and_infinity_read_as_logged(store: Store) -> None:
    mlflow = store.mlflow
    kl = [0.01 * s for s in range(12)]
    kl[5], kl[7], kl[8] = math.nan, math.inf, -math.inf
    before = time.time()
    with mlflow.start_run(run_name="grpo-tiny") as run:
        for step in range(12):
            mlflow.log_metrics(
                {"kl": kl[step], "reward": step / 4, "completions/mean_length": 8.0}, step=step
            )
    source = store.source(run.info.run_id)
    steps, columns = joined(source.read())
    assert steps == list(range(12))
    assert same(columns["kl"], kl)  # NaN and ±Infinity as logged (MLflow stores neither)
    assert same(columns["reward"], [s / 4 for s in range(12)])
    assert same(columns["completions/mean_length"], [8.0] * 12)  # a key with "/"
    assert np.all((columns["time"] >= before - 1) & (columns["time"] <= time.time() + 1))
    source.refresh_info()
    assert source.info["name"] == "grpo-tiny"
    assert source.info["status"] == "finished"
    assert abs(source.info["created"] - before) < 60
    assert source.peek_last_step() == 11


def test_params_are_the_config_and_beta_comes_from_it(store: Store) -> None:
    mlflow = store.mlflow
    with mlflow.start_run(run_name="trl") as run:
        mlflow.log_params(
            {
                "beta": 0.04,
                "learning_rate": 1e-06,
                "num_generations": 8,
                "use_vllm": False,
                "output_dir": "out/grpo",
                "loss_type": "dapo",
            }
        )
        for step in range(3):
            mlflow.log_metrics({"kl": 0.01, "reward": 1.0, "frac_reward_zero_std": 0.0}, step)
    loaded = open_run(store.location(run.info.run_id))
    loaded.refresh()
    config = loaded.info["config"]
    assert config["beta"] == 0.04 and config["learning_rate"] == 1e-06
    assert config["num_generations"] == 8 and config["use_vllm"] is False
    assert config["output_dir"] == "out/grpo"
    assert loaded.meaning.preset == "trl_grpo"
    assert loaded.meaning.beta == 0.04  # β from TRL's `beta` param: not logged as a metric
    assert loaded.format_label == "MLflow"


@pytest.mark.parametrize(
    ("end", "status"), [(None, "running"), ("FINISHED", "finished"), ("FAILED", "failed"),
                        ("KILLED", "failed")]
)  # fmt: skip
def test_status_is_the_runs(store: Store, end: str | None, status: str) -> None:
    mlflow = store.mlflow
    run = mlflow.start_run(run_name="s")
    mlflow.log_metric("kl", 0.1, step=0)
    source = store.source(run.info.run_id)
    source.refresh_info()
    assert source.info["status"] == "running"
    if end is not None:
        mlflow.end_run(status=end)
        assert source.refresh_info()  # the change is seen
    assert source.info["status"] == status


def test_deleted_runs_and_experiments_are_skipped(store: Store) -> None:
    mlflow = store.mlflow
    client = mlflow.MlflowClient(store.uri)
    with mlflow.start_run(run_name="kept") as kept:
        mlflow.log_metric("kl", 0.1, step=0)
    with mlflow.start_run(run_name="deleted") as deleted:
        mlflow.log_metric("kl", 0.2, step=0)
    client.delete_run(deleted.info.run_id)
    experiment = mlflow.create_experiment("gone")
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_metric("kl", 0.3, step=0)
    assert len(store.run_ids()) == 2  # before the experiment is deleted
    client.delete_experiment(experiment)
    assert store.run_ids() == [kept.info.run_id]


def test_a_run_without_metrics_is_not_a_run_yet(store: Store) -> None:
    mlflow = store.mlflow
    run = mlflow.start_run(run_name="params only")
    mlflow.log_param("beta", 0.1)
    assert store.run_ids() == []
    mlflow.log_metric("kl", 0.1, step=0)
    assert store.run_ids() == [run.info.run_id]


# -- incremental reads ------------------------------------------------------------------------


def test_only_new_rows_are_read(store: Store) -> None:
    mlflow = store.mlflow
    run = mlflow.start_run(run_name="live")
    for step in range(10):
        mlflow.log_metrics({"kl": step / 10, "reward": step}, step=step)
    source, table = store.source(run.info.run_id), SeriesTable()
    assert joined(read_all(source, table))[0] == list(range(10))
    assert not read_all(source, table).blocks  # nothing new: nothing handed over
    for step in range(10, 15):
        mlflow.log_metrics({"kl": step / 10, "reward": step}, step=step)
    steps, columns = joined(read_all(source, table))
    assert steps == list(range(10, 15))
    assert same(columns["kl"], [s / 10 for s in range(10, 15)])
    assert table.n == 15 and table.superseded_rows == 0


def test_calls_at_one_step_are_one_row_also_across_reads(store: Store) -> None:
    mlflow = store.mlflow
    run = mlflow.start_run(run_name="train+eval")
    mlflow.log_metrics({"kl": 0.1, "reward": 1.0}, step=3)
    mlflow.log_metrics({"eval_kl": 0.2, "eval_reward": 2.0}, step=3)  # the Trainer's eval
    source, table = store.source(run.info.run_id), SeriesTable()
    assert joined(read_all(source, table))[0] == [3]
    mlflow.log_metrics({"kl": 0.3, "reward": 3.0}, step=4)
    read_all(source, table)
    mlflow.log_metrics({"eval_kl": 0.4}, step=4)  # step 4 continued after a read
    steps, columns = joined(read_all(source, table))
    assert steps == [4] and columns["kl"][0] == 0.3 and columns["eval_kl"][0] == 0.4
    assert table.steps.tolist() == [3, 4]
    assert same(table.column("kl"), [0.1, 0.3]) and same(table.column("eval_kl"), [0.2, 0.4])
    assert same(table.column("eval_reward"), [2.0, math.nan])


def test_a_step_logged_again_later_is_a_resume(store: Store) -> None:
    """A run resumed with MLFLOW_RUN_ID from an earlier checkpoint logs steps again: the
    newer values supersede from that step on, as for every format."""
    mlflow = store.mlflow
    run = mlflow.start_run(run_name="resumed")
    for step in range(6):
        mlflow.log_metric("kl", 0.1, step=step)
    time.sleep(0.01)  # a new millisecond: the file store orders values by their timestamp
    for step in range(3, 5):
        mlflow.log_metric("kl", 0.5, step=step)
    table = SeriesTable()
    read_all(store.source(run.info.run_id), table)
    assert table.steps.tolist() == [0, 1, 2, 3, 4]
    assert same(table.column("kl"), [0.1, 0.1, 0.1, 0.5, 0.5])


def test_discovery_and_check_find_the_runs(store: Store) -> None:
    mlflow = store.mlflow
    for name in ("first", "second"):
        with mlflow.start_run(run_name=name):
            for step in range(5):
                mlflow.log_metrics({"kl": 0.02, "reward": step}, step=step)
    found = list(find_runs(store.root))
    assert [loc.format for loc in found] == ["mlflow", "mlflow"]
    if store.kind == "sqlite":  # the database itself, as a path a user types
        assert locate_path(store.root / "mlflow.db") == found
    else:  # one run directory, typed
        assert locate_path(found[0].path, recursive=False) == [found[0]]
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(store.root), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode in (0, 1), out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert sorted(r["name"] for r in runs) == ["first", "second"]
    assert {r["source"]["format"] for r in runs} == {"mlflow"}
    assert all(r["rows"] == 5 and r["source"]["preset"] == "trl_grpo" for r in runs)


# -- the SQLite store: never in the writer's way ----------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    import mlflow

    uri, steps, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mlflow.set_tracking_uri(uri)
    worst = 0.0
    with mlflow.start_run(run_name="stress") as run:
        print(run.info.run_id, flush=True)
        for step in range(steps):
            started = time.perf_counter()
            mlflow.log_metrics({f"m{k}": step * 100.0 + k for k in range(keys)}, step=step)
            worst = max(worst, time.perf_counter() - started)
    print(f"worst {worst:.4f}", flush=True)
    """
)


def stress(store: Store, steps: int, keys: int) -> dict[str, Any]:
    """A writer logging as fast as MLflow lets it (a subprocess) while klwatch reads as fast as
    it can: an incremental reader, and a cold reader every few polls."""
    env = {**os.environ, **QUIET_ENV}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, store.uri, str(steps), str(keys)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert writer.stdout is not None
    run_id = writer.stdout.readline().strip()
    assert run_id, writer.communicate()[1]
    location = None
    polls = growing = busy = cold = went_back = 0
    table = SeriesTable()
    source: MlflowSource | None = None
    while writer.poll() is None:
        if location is None:
            found = [loc for loc in find_runs(store.root) if run_id in (loc.key, loc.path.name)]
            location = found[0] if found else None
            source = open_source(location) if location is not None else None
            continue
        assert source is not None
        polls += 1
        try:
            before = table.n
            top = int(table.steps[-1]) if table.n else -1
            read = read_all(source, table)
            # A read may hand over its last step again (completed): never an earlier one.
            went_back += bool(read.blocks) and int(read.blocks[0].steps[0]) < top
            growing += table.n > before
            if polls % 10 == 0:  # a cold read of everything so far, too
                open_source(location).read()
                cold += 1
        except OSError as e:  # the writer's commit under way: the next poll reads on
            assert "busy" in str(e), e
            busy += 1
    out, err = writer.communicate()
    assert source is not None
    while read_all(source, table).blocks:
        pass
    return {
        "rc": writer.returncode,
        "stderr": err,
        "worst": float(out.split()[-1]),
        "polls": polls,
        "growing": growing,
        "busy": busy,
        "cold": cold,
        "went_back": went_back,
        "table": table,
    }


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_writer_at_full_speed_never_sees_database_is_locked(store: Store) -> None:
    steps, keys = 300, 30
    result = stress(store, steps, keys)
    print({k: v for k, v in result.items() if k not in ("table", "stderr")})
    assert result["rc"] == 0, result["stderr"][-2000:]
    assert "database is locked" not in result["stderr"]
    assert result["growing"] >= 5  # klwatch really read while MLflow wrote
    table = result["table"]
    assert table.steps.tolist() == list(range(steps))
    for k in range(keys):
        assert same(table.column(f"m{k}"), [s * 100.0 + k for s in range(steps)])
    # Each log_metrics call is one transaction: a read never sees half of one.
    assert result["went_back"] == 0 and table.superseded_rows == 0


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_file_store_read_while_written_is_the_log(store: Store) -> None:
    """Metric files of one run are appended one after another: a poll that catches a call
    half-written hands its step over again when complete, and never reads it as a resume
    (which would drop the rows after it)."""
    steps, keys = 2000, 30
    result = stress(store, steps, keys)
    print({k: v for k, v in result.items() if k not in ("table", "stderr")})
    assert result["rc"] == 0, result["stderr"][-2000:]
    assert result["growing"] >= 5
    table = result["table"]
    assert table.steps.tolist() == list(range(steps))
    for k in range(keys):
        assert same(table.column(f"m{k}"), [s * 100.0 + k for s in range(steps)])
    assert result["went_back"] == 0


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_unchanged_database_is_not_opened(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = store.mlflow
    run = mlflow.start_run()
    mlflow.log_metric("kl", 0.1, step=0)
    source = store.source(run.info.run_id)
    assert source.read().blocks

    def no_connection(path: Path) -> None:
        raise AssertionError("connected to an unchanged database")

    with monkeypatch.context() as patch:
        patch.setattr(mlflow_sqlite, "_Database", no_connection)
        assert not source.read().blocks
    mlflow.log_metric("kl", 0.2, step=1)
    assert joined(source.read())[0] == [1]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_locked_database_is_retried_not_waited_on(store: Store) -> None:
    """While MLflow commits it holds the lock: the read gives up after the short busy
    timeout (never blocking a page), keeps what it had, and the next poll reads on."""
    mlflow = store.mlflow
    run = mlflow.start_run()
    mlflow.log_metric("kl", 0.1, step=0)
    source, table = store.source(run.info.run_id), SeriesTable()
    read_all(source, table)
    mlflow.log_metric("kl", 0.2, step=1)
    writer = sqlite3.connect(store.root / "mlflow.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # what a commit under way holds
    started = time.monotonic()
    with pytest.raises(OSError, match="busy"):
        source.read()
    assert time.monotonic() - started < 2
    writer.execute("COMMIT")
    writer.close()
    read_all(source, table)
    assert table.steps.tolist() == [0, 1] and same(table.column("kl"), [0.1, 0.2])


def test_peeks_without_reading(store: Store) -> None:
    """What the run list shows for a run nobody opened: its last step, when it last
    logged and its usual step interval."""
    mlflow = store.mlflow
    run = mlflow.start_run()
    for step in range(6):
        mlflow.log_metrics({"kl": 0.1, "reward": 1.0}, step=step)
        time.sleep(0.02)
    source = store.source(run.info.run_id)
    assert source.peek_last_step() == 5
    interval = source.peek_step_interval()
    assert interval is not None and 0.015 < interval < 1.0
    newest = source.last_write_time()
    assert newest is not None and abs(newest - time.time()) < 5


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_rebuilt_metrics_table_is_read_again(store: Store) -> None:
    """`mlflow db upgrade` rebuilds tables (new rowids): the run is read again from the
    start rather than from a rowid that now means another row."""
    mlflow = store.mlflow
    with mlflow.start_run() as other:
        mlflow.log_metric("x", 1.0, step=0)
    run = mlflow.start_run()
    for step in range(5):
        mlflow.log_metrics({"kl": step, "reward": -step}, step=step)
    source, table = store.source(run.info.run_id), SeriesTable()
    read_all(source, table)
    mlflow.end_run()
    db = sqlite3.connect(store.root / "mlflow.db")
    with db:  # the other run's rows gone, the table copied: the same rows, new rowids
        db.execute("DELETE FROM metrics WHERE run_uuid = ?", (other.info.run_id,))
        db.execute("CREATE TABLE copy AS SELECT * FROM metrics ORDER BY rowid")
        db.execute("DELETE FROM metrics")
        db.execute("INSERT INTO metrics SELECT * FROM copy ORDER BY rowid")
        db.execute("DROP TABLE copy")
    db.close()
    read = read_all(source, table)
    assert read.reset and "read again" in read.reset
    assert table.steps.tolist() == list(range(5))
    assert same(table.column("kl"), range(5)) and same(table.column("reward"), range(0, -5, -1))


def test_damaged_rows_are_skipped_and_counted(store: Store) -> None:
    mlflow = store.mlflow
    run = mlflow.start_run()
    for step in range(4):
        mlflow.log_metric("kl", step / 10, step=step)
    mlflow.end_run()
    run_id = run.info.run_id
    if store.kind == "sqlite":
        db = sqlite3.connect(store.root / "mlflow.db")
        with db:  # what MLflow never writes: text in the value column, a negative step
            db.execute("INSERT INTO metrics VALUES ('kl', 'not a number', 1, ?, 9, 0)", (run_id,))
            db.execute("INSERT INTO metrics VALUES ('kl', 0.5, 2, ?, -1, 0)", (run_id,))
            db.execute("INSERT INTO metrics VALUES ('kl', 0.9, 3, ?, 4, 0)", (run_id,))
        db.close()
        where = "mlflow.db"
    else:
        kl_file = next((store.root / "mlruns").glob(f"*/{run_id}/metrics/kl"))
        now = int(time.time() * 1000) + 1000
        with kl_file.open("a") as f:
            f.write(f"{now} not-a-number 9\n{now} 0.5 -1\n\n{now} 0.9 4\n")
            f.write("9" * 10_000 + f"\n{now} 1.0 5\n")  # an overlong line, then one more
        where = "metrics/kl"
    read = store.source(run_id).read()
    assert all(p.file == where for p in read.problems)
    steps, columns = joined(read)
    if store.kind == "sqlite":
        assert read.skipped == len(read.problems) == 2
        assert steps == [0, 1, 2, 3, 4] and columns["kl"][-1] == 0.9
    else:
        assert read.skipped == len(read.problems) == 3
        assert [p.line for p in read.problems] == [5, 6, 9]  # numbered as in the file
        assert steps == [0, 1, 2, 3, 4, 5] and columns["kl"][-1] == 1.0


def test_not_mlflow_databases_are_ignored(tmp_path: Path) -> None:
    assert locate_file(tmp_path / "missing.db") == []
    (tmp_path / "text.db").write_text("not sqlite at all")
    assert locate_file(tmp_path / "text.db") == []
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE runs (run_uuid TEXT)")
    other.commit()
    other.close()
    assert locate_file(tmp_path / "other.db") == []
    # MLflow's table names, but `metrics` a view: a hostile schema is not read at all
    view = sqlite3.connect(tmp_path / "view.db")
    for table, columns in mlflow_sqlite._DB_TABLES.items():
        if table != "metrics":
            extra = {"experiment_id"} if table == "runs" else set()
            view.execute(f"CREATE TABLE {table} ({', '.join(sorted(columns | extra))})")
    view.execute(
        "CREATE VIEW metrics AS SELECT 'k' AS key, 0.0 AS value, 0 AS timestamp,"
        " 'r' AS run_uuid, 0 AS step, 0 AS is_nan"
    )
    view.execute("INSERT INTO runs (run_uuid, name) VALUES ('r', 'x')")
    view.commit()
    view.close()
    assert locate_file(tmp_path / "view.db") == []
    assert list(find_runs(tmp_path)) == []


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_a_metric_file_that_is_a_link_is_not_followed(store: Store, tmp_path: Path) -> None:
    mlflow = store.mlflow
    with mlflow.start_run() as run:
        mlflow.log_metric("kl", 0.1, step=0)
    secret = tmp_path / "secret"
    secret.write_text("1 42.0 0\n")
    metrics_dir = next((store.root / "mlruns").glob(f"*/{run.info.run_id}/metrics"))
    (metrics_dir / "reward").symlink_to(secret)
    read = store.source(run.info.run_id).read()
    assert "reward" not in joined(read)[1]
    assert [p.file for p in read.problems] == ["metrics/reward"]


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_a_removed_run_directory_is_a_read_error(store: Store) -> None:
    mlflow = store.mlflow
    with mlflow.start_run() as run:
        mlflow.log_metric("kl", 0.1, step=0)
    source = store.source(run.info.run_id)
    assert source.read().blocks
    shutil.rmtree(source.path)
    with pytest.raises(FileNotFoundError):
        source.read()


def test_source_kind_follows_the_location(tmp_path: Path) -> None:
    assert isinstance(open_source(RunLocation("mlflow", tmp_path / "m.db", "r1")), MlflowDbSource)
    assert isinstance(open_source(RunLocation("mlflow", tmp_path / "run")), MlflowDirSource)


# -- meta.yaml without a YAML library ---------------------------------------------------------

NAMES = [
    "grpo-tiny",
    "it's: a run # with 'quotes' and \"doubles\"",
    "0.5",
    "null",
    "true",
    "ünïcödé 日本語 run",
    "tab\there",
    "bell\x07 and escape\x1b[2J",
    "a very long run name " * 12,
    "-starts with dash",
    "  leading spaces",
    "",
]


@pytest.mark.parametrize("name", NAMES)
def test_meta_yaml_parsed_as_mlflow_writes_it(name: str, tmp_path: Path) -> None:
    import yaml
    from mlflow.utils.yaml_utils import write_yaml

    data = {"run_id": "abc", "run_name": name, "status": 3, "lifecycle_stage": "active",
            "start_time": 1700000000000, "tags": [], "experiment_id": "0"}  # fmt: skip
    write_yaml(str(tmp_path), "meta.yaml", data)
    text = (tmp_path / "meta.yaml").read_text()
    expected = yaml.safe_load(text)
    meta = parse_meta(text)
    assert meta["run_name"] == expected["run_name"]
    assert meta["status"] == "3" and meta["lifecycle_stage"] == "active"
    assert meta["start_time"] == "1700000000000" and meta["run_id"] == "abc"


# -- a real TRL run ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_trl_grpo_logged_to_mlflow_is_one_run_with_trls_kl(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tools.tiny_trl import PROMPTS, build_tiny_model, reward_words

    model = build_tiny_model(tmp_path / "tiny-model")
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        beta=0.04,
        max_steps=4,
        logging_steps=1,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
        report_to=["mlflow"],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=str(model),
        reward_funcs=reward_words,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
        processing_class=AutoTokenizer.from_pretrained(model),
    )
    trainer.train()
    logged = {h["step"]: h["kl"] for h in trainer.state.log_history if "kl" in h}
    assert len(logged) == 4

    (location,) = find_runs(store.root)  # exactly one run
    run = open_run(location)
    run.refresh()
    assert run.meaning.preset == "trl_grpo"
    assert run.meaning.mapping["kl_mean"] == "kl"
    assert run.meaning.beta == 0.04  # from the params MLflowCallback logged
    assert run.info["status"] == "finished"
    steps = run.steps.tolist()
    kl = run.column("kl_mean")
    assert {s: kl[steps.index(s)] for s in logged} == logged
