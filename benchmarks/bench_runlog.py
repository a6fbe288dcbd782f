"""Run-log reader benchmark: cold load vs pandas, refresh cost vs run length, memory.

Prints ratios measured side by side in this run (machines here are noisy):
  * cold load of a 1M-step metrics.jsonl: pandas.read_json(lines=True) / load_run  (goal >= 10)
  * Run.refresh() after appending 100 records, 1M-step run / 1k-step run          (goal <= 1.5)
  * memory held by a loaded 1M-step run (columns) and the process RSS growth
Usage: python benchmarks/bench_runlog.py [--steps 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import best_of, median_of, synthetic_lines, write_run
from monitor import load_run


def orjson_per_line(path: Path) -> pd.DataFrame:
    """The obvious hand-written reader: one orjson.loads per line, then a DataFrame."""
    with open(path, "rb") as f:
        return pd.DataFrame.from_records([orjson.loads(line) for line in f])


def refresh_cost(run_dir: Path, start_step: int) -> float:
    """Seconds for one refresh() that picks up 100 appended records (median of several)."""
    run = load_run(run_dir)
    next_step = start_step

    def once() -> float:
        nonlocal next_step
        with open(run_dir / "metrics.jsonl", "ab") as f:
            f.write(synthetic_lines(next_step, 100))
        next_step += 100
        t0 = time.perf_counter()
        assert run.refresh() == 100
        return time.perf_counter() - t0

    once()  # warm up
    return median_of(once, repeat=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        print(f"writing {args.steps:,}-step run ...", flush=True)
        path = write_run(big, args.steps)
        write_run(small, 1_000)
        size_mb = path.stat().st_size / 1e6
        print(f"metrics.jsonl: {size_mb:.0f} MB, 8 fields")

        t_pandas = best_of(lambda: pd.read_json(path, lines=True), repeat=2)
        t_orjson = best_of(lambda: orjson_per_line(path), repeat=2)
        t_load = best_of(lambda: load_run(big), repeat=3)
        print(
            f"cold load   pandas.read_json {t_pandas:.2f} s | orjson per line + DataFrame "
            f"{t_orjson:.2f} s | load_run {t_load:.2f} s"
        )
        print(
            f"            speed-up vs pandas {t_pandas / t_load:.1f}x (goal >= 10x) | "
            f"vs orjson per line {t_orjson / t_load:.1f}x"
        )

        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        run = load_run(big)
        rss1 = psutil.Process().memory_info().rss
        print(
            f"memory      columns {run.nbytes() / 1e6:.0f} MB for {run.n_rows:,} rows "
            f"| RSS growth {(rss1 - rss0) / 1e6:.0f} MB"
        )
        del run

        r_small = refresh_cost(small, 1_000)
        r_big = refresh_cost(big, args.steps)
        print(
            f"refresh+100 1k-step run {r_small * 1e3:.2f} ms | {args.steps:,}-step run "
            f"{r_big * 1e3:.2f} ms | ratio {r_big / r_small:.2f} (goal <= 1.5)"
        )


if __name__ == "__main__":
    main()
