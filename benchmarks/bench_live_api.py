"""What one poll of the live endpoint costs the server, against the check it replaced.

A page following a run asks `GET /klwatch/live` twice a second (monitor/dashboard/live_api.py).
This times, in-process over a store of 100 finished runs plus the followed run:

  * the baseline, measured in the same run: one check of the fallback's fragment ticker
    (store.refresh + the render key + the sidebar key, app.py `live_ticker`) — what every
    live page cost the server twice a second before, before any rerun it caused;
  * a poll when nothing changed (`have` = the current version): the common case;
  * a poll after new rows, the answer built (downsampled series, orjson) — once per run
    version and options, shared by every viewer — and served from the cache to the others;

for a followed run of 10k and of 1M steps, and prints each as a ratio to the baseline.

Usage: python benchmarks/bench_live_api.py [--big 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import best_of, median_of, write_run  # noqa: E402
from monitor.dashboard import live_api, views  # noqa: E402
from monitor.dashboard.store import RunStore  # noqa: E402

SERIES = ("kl_mean", "kl_max", "beta", "reward_mean", "reward_total")


def per_call_ms(fn: Callable[[], object], repeat: int = 200) -> float:
    """Median over `repeat` calls, in ms (each call timed alone: best_of of one)."""
    return 1000 * median_of(lambda: best_of(fn, repeat=1), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=1_000_000, help="steps of the big run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        for i in range(100):
            write_run(root / f"run{i:03d}", 2000, written_s_ago=3600)
        print(f"writing runs of 10,000 and {args.big:,} steps …", file=sys.stderr)
        write_run(root / "small", 10_000)
        write_run(root / "big", args.big)
        store = RunStore([root], watch=False, background_checks=False)
        try:
            rows = []
            for run in ("bench/small", "bench/big"):
                store.refresh(run)
                store.summaries_cached()

                def ticker_check(run: str = run) -> object:
                    store.refresh(run)
                    pulse = store.pulse(run)
                    assert pulse is not None
                    return views.render_key(pulse), views.sidebar_key(store.summaries_cached())

                version = live_api.data_version(store, run) or ""
                unchanged = live_api.LiveQuery("t", run, version, SERIES, 0.0)
                changed = live_api.LiveQuery("t", run, "", SERIES, 0.0)
                base = per_call_ms(ticker_check)
                poll = per_call_ms(lambda q=unchanged: live_api.answer(store, q))
                t0 = time.perf_counter()
                body = live_api.answer(store, changed)  # builds the answer once …
                build = 1000 * (time.perf_counter() - t0)
                cached = per_call_ms(lambda q=changed: live_api.answer(store, q))  # … shared
                rows.append((run, base, poll, build, cached, len(body)))
        finally:
            store.close()
    print("server CPU per poll, ms (ratio to the fallback ticker's check, same run)")
    head = ("ticker check", "poll, unchanged", "poll, new rows (build)", "served from cache")
    print(f"{'run':14s} {head[0]:>12s} {head[1]:>18s} {head[2]:>24s} {head[3]:>20s}    answer")
    for run, base, poll, build, cached, size in rows:
        print(
            f"{run:14s} {base:10.3f} ms {poll:9.3f} ms ({poll / base:4.2f}x) "
            f"{build:13.1f} ms ({build / base:6.1f}x) {cached:9.3f} ms ({cached / base:4.2f}x) "
            f"{size / 1024:7.0f} KB"
        )


if __name__ == "__main__":
    main()
