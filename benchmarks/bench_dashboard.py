"""Dashboard benchmark: open a 1M-step run, then follow it live.

Prints, measured in this run (these machines are noisy: read the ratios):
  * open   = RunStore.get (parse 1M rows + alert engine) + the run page's figures built
             with downsampling + serialized as Streamlit sends them (plotly JSON)
    vs baselines: pandas.read_json(lines=True) for the load; the same figures with every
    point handed to plotly (no downsampling)
  * refresh = append 100 rows, store.refresh + rebuild + serialize the figures
    vs the same rebuild without downsampling, and vs re-opening from scratch
Usage: python benchmarks/bench_dashboard.py [--steps 1000000] [--appends 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import synthetic_lines, write_run  # noqa: E402
from monitor.dashboard.charts import ChartOptions, run_figures  # noqa: E402
from monitor.dashboard.run_view import RunView  # noqa: E402
from monitor.dashboard.store import RunStore  # noqa: E402

EXTRA = ["entropy"]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def build_page(view: RunView | None, options: ChartOptions) -> int:
    """Figures for the run page, serialized like st.plotly_chart does; returns JSON bytes."""
    assert view is not None
    figures = run_figures(
        view.data, view.meaning, view.alerts, options, extra=EXTRA, thresholds=view.thresholds
    )
    return sum(len(pio.to_json(fig, validate=False)) for fig in figures.values())


def open_run(root: Path, options: ChartOptions) -> dict[str, float]:
    store = RunStore([root], watch=False)
    run_id = store.run_ids()[0]
    load_s, view = timed(lambda: store.view(run_id))
    figures_s, nbytes = timed(lambda: build_page(view, options))
    store.close()
    return {"load": load_s, "figures": figures_s, "bytes": nbytes}


def refresh_once(
    store: RunStore, run_id: str, path: Path, options: ChartOptions
) -> tuple[float, float]:
    """(seconds for store.refresh alone, seconds for refresh + figures + JSON)."""
    view = store.view(run_id)
    assert view is not None and view.data.last_step is not None
    start = view.data.last_step + 1
    with open(path, "ab") as f:
        f.write(synthetic_lines(start, 100, seed=start))
    t0 = time.perf_counter()
    store.mark_dirty(path.parent)  # what the watchdog event does
    assert store.refresh(run_id)
    read_s = time.perf_counter() - t0
    build_page(store.view(run_id), options)
    return read_s, time.perf_counter() - t0


def live(root: Path, appends: int) -> dict[str, tuple[float, float]]:
    store = RunStore([root], watch=False)
    run_id = store.run_ids()[0]
    store.view(run_id)
    path = root / "run" / "metrics.jsonl"
    out = {}
    for label, options in (
        ("downsampled", ChartOptions()),
        ("smoothed 0.6", ChartOptions(smoothing=0.6)),
        ("no downsampling", ChartOptions(budget=10**9)),
    ):
        samples = [refresh_once(store, run_id, path, options) for _ in range(appends)]
        out[label] = (
            statistics.median(s[0] for s in samples),
            statistics.median(s[1] for s in samples),
        )
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="klwatch-bench-dash-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        path = write_run(root / "run", args.steps)
        print(f"wrote {args.steps:,} steps ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

        ours = open_run(root, ChartOptions())
        raw = open_run(root, ChartOptions(budget=10**9))
        pandas_s, _ = timed(lambda: pd.read_json(path, lines=True))
        total = ours["load"] + ours["figures"]
        print("\n== open (1M steps)")
        print(f"load: RunStore.get (parse + alerts)     {ours['load']:7.2f} s")
        print(f"load baseline: pandas.read_json(lines)  {pandas_s:7.2f} s   "
              f"ratio {ours['load'] / pandas_s:.2f}")  # fmt: skip
        print(f"figures, downsampled (+JSON)            {ours['figures']:7.3f} s   "
              f"{ours['bytes'] / 1e6:.2f} MB JSON")  # fmt: skip
        print(
            f"figures baseline: every point (+JSON)   {raw['figures']:7.3f} s   "
            f"{raw['bytes'] / 1e6:.1f} MB JSON   ratio {ours['figures'] / raw['figures']:.3f}"
        )
        print(f"open total (load + figures)             {total:7.2f} s")

        refresh = live(root, args.appends)
        print(f"\n== live refresh: +100 rows, median of {args.appends}")
        read_ms = refresh["downsampled"][0] * 1e3
        print(f"store.refresh alone (100 rows + alerts) {read_ms:8.2f} ms")
        for label, (_, seconds) in refresh.items():
            print(f"refresh + figures, {label:<17} {seconds * 1e3:8.1f} ms")
        down = refresh["downsampled"][1]
        ratio = down / refresh["no downsampling"][1]
        print(f"ratio downsampled / no downsampling     {ratio:.3f}")
        print(f"ratio refresh / open                    {down / total:.3f}")


if __name__ == "__main__":
    main()
