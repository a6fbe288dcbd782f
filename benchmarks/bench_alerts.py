"""Alert engine cost against the cost of loading the same run (ratios: machines are noisy).

1. A 1M-step run is written to a temp dir; time `load_run` (the baseline) and the engine
   over all rows (what `check` adds). Target: check/load <= ~2.
2. The live path: time `update()` after appending 100 rows to a 1k-row and to a 1M-row
   run. Target: ratio ~1 (O(new rows), not O(run)).

    .venv/bin/python benchmarks/bench_alerts.py [--rows N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import best_of
from monitor.alerts import AlertEngine
from monitor.run import load_run


def synthetic_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A plausible run: KL rising to a plateau with log-normal noise, a few spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    kl = (1e-4 + 0.05 * (1 - np.exp(-t / 5000))) * np.exp(rng.normal(0, 0.2, n))
    kl_max = kl * 4 * np.exp(rng.normal(0, 0.3, n))
    kl_max[rng.choice(n, size=max(1, n // 100_000), replace=False)] *= 30
    return {
        "time": 1.7e9 + t * 2.0,
        "kl_mean": kl,
        "kl_max": kl_max,
        "beta": np.full(n, 0.1),
        "reward_mean": 1 - np.exp(-t / 8000) + rng.normal(0, 0.05, n),
        "response_len": rng.integers(50, 300, n).astype(float),
        # the health series, so the health rules do their work too
        "entropy": 2.0 * np.exp(-t / 50_000) * np.exp(rng.normal(0, 0.05, n)),
        "grad_norm": np.exp(rng.normal(0, 0.3, n)),
        "truncated_frac": rng.binomial(8, 0.1, n) / 8,
        "zero_std_frac": rng.binomial(8, 0.4, n) / 8,
        "loss": rng.normal(0, 0.1, n),
    }


def write_metrics(path: Path, columns: dict[str, np.ndarray], start: int, stop: int) -> None:
    """Append rows [start, stop) as metrics.jsonl lines (formatted in bulk, not per dict)."""
    names = list(columns)
    template = '{"step":%d,' + ",".join(f'"{k}":%r' for k in names) + "}"
    rows = zip(range(start, stop), *(columns[k][start:stop].tolist() for k in names), strict=True)
    with open(path, "a") as f:
        f.write("\n".join(template % row for row in rows) + "\n")


def make_run(directory: Path, columns: dict[str, np.ndarray], rows: int) -> Path:
    directory.mkdir(parents=True)
    (directory / "run.json").write_text('{"name": "bench", "status": "running"}')
    write_metrics(directory / "metrics.jsonl", columns, 0, rows)
    return directory


def bench_check(root: Path, rows: int) -> None:
    directory = make_run(root / "big", synthetic_columns(rows), rows)
    load_s = best_of(lambda: load_run(directory), repeat=3)
    run = load_run(directory)
    check_s = best_of(lambda: AlertEngine().update(run), repeat=3)
    alerts = AlertEngine()
    alerts.update(run)
    print(f"rows                 {rows:,}")
    print(f"load_run             {load_s:.3f} s")
    print(f"engine, all rows     {check_s:.3f} s  ({len(alerts.alerts)} alerts)")
    print(f"check / load         {check_s / load_s:.2f}   (target <= ~2)")


def live_update_cost(
    root: Path,
    name: str,
    rows: int,
    columns: dict[str, np.ndarray],
    appends: int = 20,
    per_append: int = 100,
) -> float:
    """Median seconds of refresh() + update() for `per_append` new rows."""
    directory = make_run(root / name, columns, rows)
    run = load_run(directory)
    engine = AlertEngine()
    engine.update(run)
    costs = []
    for i in range(appends):
        start = rows + i * per_append
        write_metrics(directory / "metrics.jsonl", columns, start, start + per_append)
        run.refresh()
        t0 = time.perf_counter()
        engine.update(run)
        costs.append(time.perf_counter() - t0)
    return statistics.median(costs)


def bench_live(root: Path, big: int) -> None:
    columns = synthetic_columns(big + 10_000, seed=1)
    del columns["response_len"]  # the common case: a series the engine reads is absent
    small_s = live_update_cost(root, "live-1k", 1_000, columns)
    big_s = live_update_cost(root, "live-big", big, columns)
    print(f"update(+100 rows) on 1k-row run     {small_s * 1e3:.3f} ms")
    print(f"update(+100 rows) on {big:,}-row run {big_s * 1e3:.3f} ms")
    print(f"ratio big / small                   {big_s / small_s:.2f}   (target ~1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        bench_check(Path(tmp), args.rows)
        bench_live(Path(tmp), args.rows)


if __name__ == "__main__":
    main()
