"""MLflow source benchmark: an MLflow SQLite store (mlflow-skinny, `sqlite:///<tmp>/mlflow.db`)
with a 1k-step and a 100k-step run of 30 keys, read cold by klwatch, refreshed after +100
steps (ratio, goal <= 1.5); then a writer logging at 50 Hz while klwatch reads as fast as it
can: the writer's per-call latency with and without klwatch reading (goal: never blocked
more than 50 ms by klwatch) and whether any "database is locked" error occurred.

The store, its experiment and runs, the 1k-step run and every +100 steps are written by
`MlflowClient().log_batch` (chunks of 33 steps x 30 keys: MLflow takes at most 1,000 metrics
a call). log_batch manages ~10k values/s here, so the 100k-step run's 3M values would take
~5 min: by default they are inserted with sqlite3 into the `metrics` and `latest_metrics`
tables MLflow created, row for row what log_batch writes (same columns, types, timestamps
in ms; checked below); `--via-log-batch` writes them through log_batch anyway.

The 50 Hz writer is a subprocess: `mlflow.start_run` + `mlflow.log_metrics({5 keys},
step=i)` per step (what transformers' MLflowCallback calls), each call timed, for
--seconds per phase, in four phases on the same database: alone; with klwatch refreshing
that run in a loop (`Run.refresh`); with that loop and a loop of cold reads of the
100k-step run (`load_run`), both in threads of this process, as in the klwatch server;
alone again (this machine's own noise: fsync stalls of 100+ ms happen with nothing
reading). klwatch's statements are timed too (first row to last: the time each held
SQLite's SHARED lock, which a commit waits for).

    .venv/bin/python benchmarks/_mlflow_bench.py [--steps 100000] [--keys 30] [--seconds 20]
        [--rounds 15] [--via-log-batch]
(bench_sources.py runs it after the W&B figures.)
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:  # klwatch is imported by the reader only, never by the writer subprocess
    from monitor.sources import RunLocation

EXPERIMENT = "bench"
APPEND = 100
SMALL_STEPS = 1000
STEPS_PER_BATCH = 33  # x 30 keys: under MLflow's 1,000 metrics per log_batch
T0_MS = 1_780_000_000_000
STEP_MS = 500
HZ = 50
LIVE_KEYS = ("kl", "reward", "loss", "entropy", "grad_norm")
# transformers' MLflowCallback logs the Trainer's raw names (TRL's GRPO metrics)
TRL_KEYS = (
    "kl",
    "reward",
    "loss",
    "grad_norm",
    "learning_rate",
    "reward_std",
    "entropy",
    "completions/mean_length",
    "clip_ratio/region_mean",
    "epoch",
)


def key_names(count: int) -> list[str]:
    return [TRL_KEYS[i] if i < len(TRL_KEYS) else f"extra_{i}" for i in range(count)]


def values_for(seed: int, total: int, keys: int) -> np.ndarray:
    """What a run logs: row i is step i + 1 (reproducible when checking)."""
    return np.random.default_rng(seed).lognormal(-3.0, 0.5, (total, keys))


# -- writing ---------------------------------------------------------------------------------


def log_steps(client: Any, run_id: str, values: np.ndarray, names: list[str], first: int) -> None:
    """Steps first+1 … first+len(values) through MlflowClient.log_batch."""
    from mlflow.entities import Metric

    rows = values.tolist()
    for lo in range(0, len(rows), STEPS_PER_BATCH):
        metrics: list[Any] = []
        for step, row in enumerate(rows[lo : lo + STEPS_PER_BATCH], start=first + lo + 1):
            stamp = T0_MS + step * STEP_MS
            metrics.extend(Metric(k, v, stamp, step) for k, v in zip(names, row, strict=True))
        client.log_batch(run_id, metrics=metrics)


def bulk_insert(db: Path, run_id: str, values: np.ndarray, names: list[str]) -> None:
    """Steps 1 … len(values) as log_batch stores them, in one sqlite3 transaction."""
    steps = np.arange(1, len(values) + 1)
    conn = sqlite3.connect(db)
    try:
        with conn:
            for lo in range(0, len(values), 20_000):
                part = values[lo : lo + 20_000].tolist()
                conn.executemany(
                    "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
                    " VALUES (?, ?, ?, ?, ?, 0)",
                    (
                        (name, value, T0_MS + step * STEP_MS, run_id, step)
                        for step, row in zip(steps[lo:].tolist(), part, strict=False)
                        for name, value in zip(names, row, strict=True)
                    ),
                )
            last = len(values)
            conn.executemany(
                "INSERT OR REPLACE INTO latest_metrics (key, value, timestamp, step, is_nan,"
                " run_uuid) VALUES (?, ?, ?, ?, 0, ?)",
                [
                    (name, values[-1, j], T0_MS + last * STEP_MS, last, run_id)
                    for j, name in enumerate(names)
                ],
            )
    finally:
        conn.close()


def check_row_form(db: Path) -> None:
    """Every metrics row has the column types log_batch gives them."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        kinds = conn.execute(
            "SELECT DISTINCT typeof(key), typeof(value), typeof(timestamp), typeof(run_uuid),"
            " typeof(step), typeof(is_nan) FROM metrics"
        ).fetchall()
    finally:
        conn.close()
    assert kinds == [("text", "real", "integer", "text", "integer", "integer")], kinds


# -- the 50 Hz writer (a subprocess) ---------------------------------------------------------


def live_writer(db: Path, control: Path, seconds: float) -> None:
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.set_experiment(EXPERIMENT)
    latencies: list[float] = []
    errors: list[str] = []
    with mlflow.start_run(run_name=control.name) as run:
        mlflow.log_metrics(dict.fromkeys(LIVE_KEYS, 0.0), step=0)  # the run is readable
        (control / "run_id").write_text(run.info.run_id)
        while not (control / "go").exists():
            time.sleep(0.005)
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        step = 0
        while time.perf_counter() - start < seconds:
            step += 1
            drawn = rng.lognormal(-3.0, 0.5, len(LIVE_KEYS)).tolist()
            metrics = dict(zip(LIVE_KEYS, drawn, strict=True))
            t0 = time.perf_counter()
            try:
                mlflow.log_metrics(metrics, step=step)
            except Exception as e:  # a lock error is what is measured
                errors.append(f"{type(e).__name__}: {e}"[:300])
            latencies.append(time.perf_counter() - t0)
            pause = start + step / HZ - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        elapsed = time.perf_counter() - start
    result = {"latencies": latencies, "errors": errors, "elapsed": elapsed, "steps": step}
    (control / "result.json").write_text(json.dumps(result))


class Loop(threading.Thread):
    """Calls `fn` as fast as it can until stopped; counts calls, reads that found the
    database busy (klwatch reads on at the next poll) and other read errors."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn, self.calls, self.reads, self.busy = fn, 0, 0, 0
        self.error_text: list[str] = []  # errors other than busy
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.fn():  # Run.refresh: rows parsed; load_run: the run
                    self.reads += 1
                self.calls += 1
            except OSError as e:
                if e.errno == errno.EBUSY:  # DatabaseBusy
                    self.busy += 1
                else:  # e.g. "database disk image is malformed": a read that went wrong
                    self.error_text.append(str(e)[:200])


class _TimedCursor:
    def __init__(self, cursor: Any, fetches: list[float]) -> None:
        self._cursor, self._fetches = cursor, fetches

    def fetchall(self) -> list[Any]:
        t0 = time.perf_counter()
        try:
            return self._cursor.fetchall()
        finally:
            self._fetches.append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _TimedConnection:
    """klwatch's read-only connection, its fetches timed: from a statement's first row to its
    last, the statement holds SQLite's SHARED lock (a lower bound of how long it held it)."""

    def __init__(self, conn: Any, fetches: list[float]) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_fetches", fetches)

    def execute(self, *args: Any) -> _TimedCursor:
        return _TimedCursor(self._conn.execute(*args), self._fetches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


def time_klwatch_statements() -> list[float] | None:
    """Time every fetch of klwatch's MLflow reader from now on (measurement only; None if
    its connection class is not where it was)."""
    from monitor.sources import mlflow_sqlite as source

    database = getattr(source, "_Database", None)
    if database is None:
        return None
    fetches: list[float] = []
    init = database.__init__

    def timed_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.conn = _TimedConnection(self.conn, fetches)

    database.__init__ = timed_init
    return fetches


def live_phase(
    db: Path, tmp: Path, name: str, seconds: float, readers: list[str], big: RunLocation
) -> dict[str, Any]:
    from monitor.run import load_run
    from monitor.sources import RunLocation

    control = tmp / name
    control.mkdir()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--live-writer", str(db), str(control), str(seconds)]
    )
    loops: list[Loop] = []
    try:
        while not (control / "run_id").exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the MLflow writer exited with {proc.returncode}")
            time.sleep(0.01)
        run_id = (control / "run_id").read_text()
        if "refresh" in readers:
            live = load_run(RunLocation("mlflow", db, run_id))
            loops.append(Loop(live.refresh))
        if "cold" in readers:
            loops.append(Loop(lambda: load_run(big)))
        for loop in loops:
            loop.start()
        (control / "go").write_text("")
        if proc.wait(timeout=seconds + 120):
            raise RuntimeError(f"the MLflow writer exited with {proc.returncode}")
    finally:
        for loop in loops:
            loop.stop.set()
        for loop in loops:
            loop.join()
        if proc.poll() is None:
            proc.kill()
    result = json.loads((control / "result.json").read_text())
    result["loops"] = loops
    if "refresh" in readers:  # every step the writer logged was read
        live.refresh()
        assert live.n_rows == result["steps"] + 1, (live.n_rows, result["steps"])
    return result


def summary(result: dict[str, Any]) -> dict[str, float]:
    ms = np.array(result["latencies"]) * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "hz": result["steps"] / result["elapsed"],
        "calls": len(ms),
    }


# -- the benchmark ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15, help="refreshes timed (+1 warm-up)")
    parser.add_argument("--seconds", type=float, default=20.0, help="each 50 Hz phase")
    parser.add_argument("--via-log-batch", action="store_true", help="write the big run so")
    args, _ = parser.parse_known_args()
    import mlflow
    from mlflow import MlflowClient

    from monitor.run import load_run

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial … tables"
    from monitor.sources import locate_path

    names = key_names(args.keys)
    rounds = args.rounds + 1
    sizes = {"small": SMALL_STEPS, "big": args.steps}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "mlflow.db"
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        client = MlflowClient()
        experiment = client.create_experiment(EXPERIMENT)
        run_ids: dict[str, str] = {}
        values: dict[str, np.ndarray] = {}
        for seed, (name, steps) in enumerate(sizes.items()):
            run_ids[name] = client.create_run(experiment, run_name=name).info.run_id
            client.log_param(run_ids[name], "beta", 0.04)
            values[name] = values_for(seed, steps + rounds * APPEND, args.keys)
        t0 = time.perf_counter()
        log_steps(client, run_ids["small"], values["small"][:SMALL_STEPS], names, 0)
        t_small = time.perf_counter() - t0
        t0 = time.perf_counter()
        big_values = values["big"][: args.steps]
        if args.via_log_batch:
            log_steps(client, run_ids["big"], big_values, names, 0)
        else:
            bulk_insert(db, run_ids["big"], big_values, names)
        t_big = time.perf_counter() - t0
        check_row_form(db)
        how = "log_batch" if args.via_log_batch else "sqlite3 in MLflow's row form"
        print(
            f"mlflow      wrote {SMALL_STEPS:,} steps x {args.keys} keys with log_batch "
            f"({SMALL_STEPS * args.keys / t_small:,.0f} values/s) and {args.steps:,} steps "
            f"({how}, {t_big:.0f} s): {db.stat().st_size / 1e6:.0f} MB",
            flush=True,
        )

        t0 = time.perf_counter()
        locations = {loc.key: loc for loc in locate_path(db)}
        discover = time.perf_counter() - t0
        big = locations[run_ids["big"]]
        cold = []
        for _ in range(3):
            t0 = time.perf_counter()
            run = load_run(big)
            cold.append(time.perf_counter() - t0)
        assert run.n_rows == args.steps, run.n_rows
        print(
            f"mlflow      discovery {discover * 1e3:.0f} ms | cold read of the "
            f"{args.steps:,}-step run (load_run): best {min(cold):.2f} s, median "
            f"{statistics.median(cold):.2f} s ({args.steps * args.keys / min(cold) / 1e6:.1f} "
            "M values/s)"
        )

        runs = {name: load_run(locations[run_ids[name]]) for name in sizes}
        times: dict[str, list[float]] = {name: [] for name in sizes}
        rows: dict[str, list[int]] = {name: [] for name in sizes}
        for r in range(rounds):
            for name, steps in sizes.items():  # both runs grow, as in a sweep
                first = steps + r * APPEND
                chunk = values[name][first : first + APPEND]
                log_steps(client, run_ids[name], chunk, names, first)
            for name in list(runs) if r % 2 else list(runs)[::-1]:  # neither always first
                run = runs[name]
                before = run.n_rows
                t0 = time.perf_counter()
                run.refresh()
                elapsed = time.perf_counter() - t0
                if r:  # the first round warms up
                    times[name].append(elapsed)
                    rows[name].append(run.n_rows - before)
        for name, run in runs.items():
            total = sizes[name] + rounds * APPEND
            assert np.array_equal(run.steps, np.arange(1, total + 1)), (name, run.n_rows)
            for j, key in enumerate(names):
                assert np.array_equal(run.table.column(key), values[name][:, j]), key
        med = {name: statistics.median(v) for name, v in times.items()}
        best = {name: min(v) for name, v in times.items()}
        new = {name: statistics.median(v) for name, v in rows.items()}
        print(
            f"mlflow      refresh +{APPEND} steps (median of {args.rounds}; rows read "
            f"{new['small']:.0f} / {new['big']:.0f}): 1k-step run {med['small'] * 1e3:.2f} ms | "
            f"{args.steps // 1000}k-step run {med['big'] * 1e3:.2f} ms | ratio "
            f"{med['big'] / med['small']:.2f} (goal <= 1.5)"
        )
        print(
            f"            best {best['small'] * 1e3:.2f} ms | {best['big'] * 1e3:.2f} ms | "
            f"ratio {best['big'] / best['small']:.2f}; every step and value checked"
        )

        phases = {
            "alone": [],
            "refresh loop": ["refresh"],
            "refresh + cold-read loops": ["refresh", "cold"],
            "alone again": [],  # the machine's own noise, after
        }
        print(
            f"mlflow      a writer at {HZ} Hz (mlflow.log_metrics of {len(LIVE_KEYS)} keys a "
            f"step) into this database, {args.seconds:.0f} s a phase:",
            flush=True,
        )
        base: dict[str, float] | None = None
        locked = klwatch_busy = klwatch_errors = 0
        fetches = time_klwatch_statements()
        for i, (phase, readers) in enumerate(phases.items()):
            if fetches is not None:
                fetches.clear()
            os.sync()  # the setup's writes are not flushed under the writer's commits
            result = live_phase(db, tmp, f"live-{i}", args.seconds, readers, big)
            s = summary(result)
            base = base or s
            locked += sum("locked" in e for e in result["errors"])
            print(
                f"            {phase:<26} p50 {s['p50']:5.1f} ms | p99 {s['p99']:5.1f} ms | "
                f"max {s['max']:5.1f} ms | {s['hz']:.1f} Hz | writer errors "
                f"{len(result['errors'])}"
                + (
                    f" | excess: max - p50 alone {s['max'] - base['p50']:.1f} ms (goal <= 50), "
                    f"max - max alone {s['max'] - base['max']:+.1f} ms"
                    if readers
                    else f" | its own tail: max - p50 {s['max'] - s['p50']:.1f} ms"
                )
            )
            for error in result["errors"][:3]:
                print(f"              {error}")
            for what, loop in zip(readers, result["loops"], strict=True):
                klwatch_busy += loop.busy
                klwatch_errors += len(loop.error_text)
                print(
                    f"              klwatch {what}: {loop.calls:,} calls "
                    f"({loop.calls / args.seconds:,.1f}/s), {loop.reads:,} reading rows, "
                    f"{loop.busy} busy, {len(loop.error_text)} other errors"
                    + (f" (first: {loop.error_text[0]})" if loop.error_text else "")
                )
            if readers and fetches:
                held = np.array(fetches) * 1e3
                print(
                    f"              klwatch statements: {held.size:,}, each holding the lock "
                    f"(first row to last) p50 {np.percentile(held, 50):.2f} ms | p99 "
                    f"{np.percentile(held, 99):.1f} ms | max {held.max():.1f} ms"
                )
        print(
            f"mlflow      'database is locked' errors in the writer: {locked}; klwatch reads "
            f"that found the database busy (retried on the next poll): {klwatch_busy}; "
            f"klwatch reads that failed otherwise: {klwatch_errors}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--live-writer":
        live_writer(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
