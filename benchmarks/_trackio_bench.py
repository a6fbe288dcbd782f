"""trackio source benchmark: a refresh costs the rows added, not the size of the run.

One trackio database written by the real `trackio` package: a 1k-step run through
`trackio.init/log/finish` (what TRL's TrackioCallback does) and a 300k-step run through
`SQLiteStorage.bulk_log` (the function trackio's own writer thread calls for every batch;
`trackio.log` manages ~12k rows/s here, so 300k rows would take ~25 s — use --via-log to
time it anyway). Then, 100 steps are appended to each run and the next read of each is
timed (best of N, and the median, measured in this run).

Prints: write rates, discovery (cold, cached), cold load of each run, and
  refresh+100 1k-step run … ms | 300k-step run … ms | ratio … (goal <= 1.5)
Usage: python benchmarks/_trackio_bench.py [--steps 300000] [--repeat 15] [--via-log]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.sources.base import RunLocation  # noqa: E402
from monitor.sources.trackio import TrackioSource, locate_file  # noqa: E402

PROJECT = "bench"
SMALL, BIG = "small-1k", "big-300k"
APPEND = 100


def trl_metrics(step: int) -> dict[str, Any]:
    """What TRL's GRPO trainer logs through trackio each step (rewrite_logs' names)."""
    return {
        "train/loss": 0.5 - step * 1e-7,
        "train/grad_norm": 1.0 + (step % 7) * 0.1,
        "train/learning_rate": 1e-6,
        "train/kl": 0.001 + (step % 13) * 1e-4,
        "train/reward": 0.1 + (step % 11) * 0.01,
        "train/reward_std": 0.2,
        "train/completions/mean_length": 120.0 + step % 50,
        "train/entropy": 2.0,
        "train/epoch": step / 1000,
        "train/global_step": step,
    }


def quiet_local_trackio(directory: Path) -> Any:
    """Import trackio writing into `directory`, local only (it reads TRACKIO_DIR once)."""
    os.environ["TRACKIO_DIR"] = str(directory)
    os.environ["TRACKIO_STORAGE_MODE"] = "sqlite"
    os.environ["HF_HUB_OFFLINE"] = "1"
    for name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID"):
        os.environ.pop(name, None)
    import trackio

    return trackio


def write_small(trackio: Any, steps: int) -> float:
    t0 = time.perf_counter()
    trackio.init(
        project=PROJECT,
        name=SMALL,
        config={"beta": 0.04},
        embed=False,
        auto_log_gpu=False,
        auto_log_cpu=False,
    )
    for step in range(1, steps + 1):
        trackio.log(trl_metrics(step))
    trackio.finish()
    return time.perf_counter() - t0


def bulk_append(storage: Any, run: str, run_id: str, first: int, count: int) -> None:
    """Rows through trackio's own storage call, with per-row timestamps like live logging."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    steps = list(range(first, first + count))
    storage.bulk_log(
        project=PROJECT,
        run=run,
        run_id=run_id,
        metrics_list=[trl_metrics(s) for s in steps],
        steps=steps,
        timestamps=[(base + timedelta(seconds=s)).isoformat() for s in steps],
    )


def write_big(trackio: Any, steps: int, via_log: bool) -> float:
    from trackio.sqlite_storage import SQLiteStorage

    t0 = time.perf_counter()
    if via_log:
        trackio.init(project=PROJECT, name=BIG, embed=False, auto_log_gpu=False, auto_log_cpu=False)
        for step in range(1, steps + 1):
            trackio.log(trl_metrics(step))
        trackio.finish()
    else:
        chunk = 20_000
        for first in range(1, steps + 1, chunk):
            bulk_append(SQLiteStorage, BIG, BIG, first, min(chunk, steps + 1 - first))
    return time.perf_counter() - t0


def run_id_of(db: Path, run: str) -> str:
    import sqlite3

    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT run_id FROM metrics WHERE run_name = ? LIMIT 1", (run,)
        ).fetchone()[0]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--via-log", action="store_true", help="write the big run via trackio.log")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trackio = quiet_local_trackio(Path(tmp))
        from trackio.sqlite_storage import SQLiteStorage

        print(f"writing {args.small:,} + {args.steps:,} steps with trackio ...", flush=True)
        t_small = write_small(trackio, args.small)
        t_big = write_big(trackio, args.steps, args.via_log)
        how = "trackio.log" if args.via_log else "SQLiteStorage.bulk_log"
        db = Path(tmp) / f"{PROJECT}.db"
        print(
            f"write       trackio.log {args.small / t_small:,.0f} rows/s | {how} "
            f"{args.steps / t_big:,.0f} rows/s | {db.stat().st_size / 1e6:.0f} MB"
        )

        t0 = time.perf_counter()
        locations = {loc.key: loc for loc in locate_file(db)}
        t_discover = time.perf_counter() - t0
        t0 = time.perf_counter()
        locate_file(db)
        t_cached = time.perf_counter() - t0
        print(f"discovery   cold {t_discover * 1e3:.1f} ms | unchanged {t_cached * 1e3:.2f} ms")

        sources: dict[str, TrackioSource] = {}
        for name in (SMALL, BIG):
            source = TrackioSource(locations.get(name) or RunLocation("trackio", db, name))
            t0 = time.perf_counter()
            rows = sum(block.n for block in source.read().blocks)
            print(f"cold load   {name}: {rows:,} rows in {time.perf_counter() - t0:.2f} s")
            sources[name] = source

        run_ids = {name: run_id_of(db, name) for name in (SMALL, BIG)}
        next_step = {SMALL: args.small + 1, BIG: args.steps + 1}
        times: dict[str, list[float]] = {SMALL: [], BIG: []}
        for i in range(args.repeat + 1):
            for name in (SMALL, BIG):  # both runs grow, as in a sweep
                bulk_append(SQLiteStorage, name, run_ids[name], next_step[name], APPEND)
                next_step[name] += APPEND
            for name in (SMALL, BIG):
                t0 = time.perf_counter()
                read = sources[name].read()
                elapsed = time.perf_counter() - t0
                assert sum(block.n for block in read.blocks) == APPEND, name
                if i:  # the first round warms caches up
                    times[name].append(elapsed)
        best = {name: min(values) for name, values in times.items()}
        median = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"refresh+{APPEND} {args.small:,}-step run {best[SMALL] * 1e3:.2f} ms | "
            f"{args.steps:,}-step run {best[BIG] * 1e3:.2f} ms | "
            f"ratio {best[BIG] / best[SMALL]:.2f} (goal <= 1.5; best of {args.repeat})"
        )
        print(
            f"            medians {median[SMALL] * 1e3:.2f} ms | {median[BIG] * 1e3:.2f} ms | "
            f"ratio {median[BIG] / median[SMALL]:.2f}"
        )


if __name__ == "__main__":
    main()
