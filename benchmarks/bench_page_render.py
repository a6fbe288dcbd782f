"""Where a viewer's browser spends its CPU: one chromium page, profiled through DevTools.

The server's cost per extra viewer is small (bench_viewers.py); on a machine that also runs
the browsers, the pages' own rendering is what runs out of CPU. This opens, one after the
other, a page on a run finished an hour ago (the baseline, measured in the same run), on a
running run that writes nothing meanwhile (a long step), on a live run with a step every
5 s, on a run written at 10 Hz, and on the compare page with that run beside a finished one,
and prints for each the renderer main thread's busy time
in % of one core (DevTools Performance TaskDuration over the window), split into script,
layout and style, and the JavaScript self time by bundle (plotly, React, Streamlit's
markdown, …) from a sampling profile. For the 10 Hz page it also times each step from its
write to the redraw of the live charts that showed it (their draw history).
Goals (issue 20): 10 Hz ≤ 10 %; finished and idle ≤ 2 %; a step on screen ≤ 1.5 s.

Usage: python benchmarks/bench_page_render.py [--runs 100] [--seconds 15] [--settle 20]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from benchmarks._common import write_run  # noqa: E402
from monitor import RunWriter  # noqa: E402
from monitor.run import STALL_MIN_SECONDS  # noqa: E402
from tools.live_server import CHROMIUM, CHROMIUM_ARGS, LIVE_PAGE, streamlit_server  # noqa: E402

HEALTHY = {"kl_mean": 0.05, "kl_max": 0.15, "beta": 0.1, "reward_mean": 0.5}
SLOW_PERIOD_S = 5.0  # a big model's RLHF step
# Profiled one after the other: a run finished an hour ago; a live run with a step every 5 s
# (the page checks twice a second, redraws once per step); one written at 10 Hz (checks
# twice a second, redraws once a second).
# The idle run first: a run silent for 60 s becomes "stalled" (a status change the page
# must show), so it is profiled before that.
PAGES = (
    ("running, idle", "bench/idle"),
    ("finished run", "bench/run000"),
    ("live, a step every 5 s", "bench/slow"),
    ("live, 10 Hz", "bench/live"),
    # The compare page: the 10 Hz run beside a finished one, on one live chart.
    ("compare, 10 Hz + finished", "bench/live&run=bench/run000"),
)
# A drawn chart: the live path's canvas (uPlot) or the fallback's plotly chart.
CHART = ".kw-live canvas, .js-plotly-plot"
METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def live_writer(run_dir: Path, period_s: float = 0.1) -> tuple[threading.Event, dict[int, float]]:
    """A run that gets a step every `period_s` (RunWriter: run.json says running); returns
    its stop event and when each step was written (wall clock, ms)."""
    writer = RunWriter(run_dir, name=run_dir.name)
    for step in range(300):
        writer.log(step, **HEALTHY)
    stop = threading.Event()
    written: dict[int, float] = {}

    def loop() -> None:
        step = 300
        while not stop.wait(period_s):
            writer.log(step, **HEALTHY)
            written[step] = time.time() * 1000
            step += 1
        writer.close()

    threading.Thread(target=loop, daemon=True).start()
    return stop, written


# When the live charts drew which step ([wall ms, last step], live_charts.js keeps them).
DRAWS = f"() => (({LIVE_PAGE})() || {{draws: []}}).draws"


def step_latencies(
    draws: list[list[float]], written: dict[int, float], since_ms: float
) -> list[float]:
    """Per step written after `since_ms`: seconds until a redraw showed it (or a later step)."""
    out = []
    for step, at in sorted(written.items()):
        if at < since_ms:
            continue
        shown = [t for t, drawn in draws if drawn is not None and drawn >= step and t >= at]
        if shown:
            out.append((min(shown) - at) / 1000)
    return out


def profile(page: Any, seconds: float) -> dict[str, Any]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 1000})
    before = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    cdp.send("Profiler.start")
    t0 = time.monotonic()
    time.sleep(seconds)
    samples = cdp.send("Profiler.stop")["profile"]
    wall = time.monotonic() - t0
    after = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    busy = {name: 100 * (after[name] - before[name]) / wall for name in METRICS}
    return {"busy": busy, "bundles": self_time_by_bundle(samples, wall)}


def self_time_by_bundle(samples: dict[str, Any], wall: float) -> list[tuple[str, float]]:
    """% of one core per script bundle (native work and idle left out)."""
    nodes = {node["id"]: node for node in samples["nodes"]}
    per_bundle: collections.Counter[str] = collections.Counter()
    for node_id, micros in zip(samples["samples"], samples["timeDeltas"], strict=False):
        url = nodes[node_id]["callFrame"]["url"]
        if url:
            bundle = url.rsplit("/", 1)[-1].split(".")[0]  # PlotlyChart.D9Z0_fxz.js → PlotlyChart
            per_bundle[bundle] += micros
    return [(name, 100 * us / 1e6 / wall) for name, us in per_bundle.most_common(6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="finished runs in the sidebar")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="after the first draw (the server's first "
        "pass over all runs changes every sidebar entry once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        for i in range(args.runs):
            write_run(root / f"run{i:03d}", 2000, written_s_ago=3600)
        idle_since = time.monotonic()
        (stop_live, written), (stop_slow, _), (stop_idle, _) = (
            live_writer(root / "live"),
            live_writer(root / "slow", SLOW_PERIOD_S),
            # Running (run.json says so) but writing nothing while profiled: a long step.
            live_writer(root / "idle", 3600.0),
        )
        results = {}
        latencies: list[float] = []
        try:
            with streamlit_server([root]) as (url, _proc), sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                for label, run_id in PAGES:
                    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                    page.goto(f"{url}/?run={run_id}")
                    page.locator(CHART).first.wait_for(timeout=60_000)
                    time.sleep(args.settle)
                    since = time.time() * 1000
                    results[label] = profile(page, args.seconds)
                    if run_id == "bench/live":
                        latencies = step_latencies(page.evaluate(DRAWS), dict(written), since)
                    page.context.close()
                    if run_id == "bench/idle":
                        # It turns "stalled" 60 s after its last write, and every open page
                        # reruns for that (the sidebar changed): not inside another's window.
                        time.sleep(max(0.0, idle_since + STALL_MIN_SECONDS + 5 - time.monotonic()))
                browser.close()
        finally:
            stop_live.set()
            stop_slow.set()
            stop_idle.set()
    print(f"one page, {args.runs} runs in the sidebar, {args.seconds:g} s; % of one core")
    print(f"{'page':26s} {'busy':>6s} {'script':>7s} {'layout':>7s} {'style':>6s}")
    for label, r in results.items():
        b = r["busy"]
        print(
            f"{label:26s} {b['TaskDuration']:5.1f}% {b['ScriptDuration']:6.0f}% "
            f"{b['LayoutDuration']:6.0f}% {b['RecalcStyleDuration']:5.0f}%"
        )
    live, idle = results["live, 10 Hz"]["busy"], results["finished run"]["busy"]
    print(f"live 10 Hz − finished (busy): {live['TaskDuration'] - idle['TaskDuration']:.0f}%")
    for label, r in results.items():
        parts = ", ".join(f"{name} {pct:.0f}%" for name, pct in r["bundles"])
        print(f"{label}: script self time by bundle: {parts}")
    if latencies:
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"10 Hz: step written → drawn on the live charts, {len(latencies)} steps: "
            f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s (goal ≤ 1.5 s)"
        )
    else:
        print("10 Hz: no draw history (the fallback's plotly charts): step latency not timed")


if __name__ == "__main__":
    main()
