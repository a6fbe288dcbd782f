"""Team-scale store benchmark: many runs, memory budget.

Prints, measured in this run:
  * 1,000 runs x 200 steps: first scan + sidebar summaries (goal ~1 s), and a second pass
    (cached); `python -m monitor check ROOT` over all of them (goal: seconds)
  * 100 runs x 100k steps opened one after another: rows held and RSS with the default
    budget vs with no budget (eviction keeps memory bounded)
Usage: python benchmarks/bench_store.py [--runs 1000] [--big-runs 100] [--big-steps 100000]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import synthetic_lines  # noqa: E402
from monitor.dashboard.store import RunStore  # noqa: E402


def make_runs(root: Path, count: int, steps: int) -> None:
    body = synthetic_lines(0, steps)
    info = '{"schema_version": 1, "status": "finished", "name": "%s"}'
    for i in range(count):
        run_dir = root / f"team-{i // 100:02d}" / f"run-{i:04d}"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_bytes(body)
        (run_dir / "run.json").write_text(info % run_dir.name)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def sidebar(root: Path, runs: int) -> None:
    store = RunStore([root], watch=False)
    t0 = time.perf_counter()
    summaries = store.summaries()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.summaries()
    second = time.perf_counter() - t0
    assert len(summaries) == runs, len(summaries)
    print(
        f"sidebar     {runs} runs: first scan + summaries {first:.2f} s (goal ~1 s) | "
        f"next rerun {second * 1e3:.0f} ms"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(root), "--json", "--fail-on", "critical"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        print(f"check failed: {proc.stderr.strip()[:300]}")
    print(f"check       {runs} runs x 200 steps: {elapsed:.2f} s (exit {proc.returncode})")


def memory(root: Path, runs: int, max_rows: int | None) -> tuple[int, float]:
    gc.collect()
    base = rss_mb()
    store = RunStore([root], watch=False, max_rows=max_rows or 10**12)
    import monitor.dashboard.store as store_module

    store_module.KEEP_WARM_S = 0.0  # a benchmark "viewer" moves on at once
    peak = 0.0
    for run_id in store.run_ids()[:runs]:
        store.get(run_id)
        peak = max(peak, rss_mb() - base)
    held = store.rows_held()
    store.close()
    return held, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--big-runs", type=int, default=100)
    parser.add_argument("--big-steps", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "many"
        make_runs(many, args.runs, 200)
        sidebar(many, args.runs)

        big = Path(tmp) / "big"
        print(f"writing {args.big_runs} runs x {args.big_steps:,} steps ...", flush=True)
        make_runs(big, args.big_runs, args.big_steps)
        budget = 2_000_000
        held_b, peak_b = memory(big, args.big_runs, budget)
        held_u, peak_u = memory(big, args.big_runs, None)
        print(
            f"memory      {args.big_runs} runs x {args.big_steps:,} steps opened in turn: "
            f"budget {budget:,} rows -> {held_b:,} rows held, peak RSS +{peak_b:.0f} MB | "
            f"no budget -> {held_u:,} rows, peak RSS +{peak_u:.0f} MB "
            f"| ratio {peak_u / max(peak_b, 1):.1f}x"
        )


if __name__ == "__main__":
    main()
