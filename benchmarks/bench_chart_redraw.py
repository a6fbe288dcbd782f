"""The floor under a live page's browser cost: redrawing plotly charts once a second.

A minimal Streamlit app (no klwatch code) shows 4 plotly line charts in a fragment that
reruns every second, with a 100-entry sidebar that is never redrawn. One headless chromium
page; its renderer's main-thread busy time (DevTools TaskDuration, % of one core) for:

  static    the fragment never reruns (the baseline, measured in the same run)
  same      it reruns every second and sends the same figures again
  changing  it reruns every second with figures that changed (what new rows do)

at several points per trace. It says what any live page costs with 4 charts at 1 Hz,
whatever the rest of the page does (bench_page_render.py profiles klwatch's own page).

Usage: python benchmarks/bench_chart_redraw.py [--points 500 2000 8000] [--seconds 12]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tools.live_server import CHROMIUM, CHROMIUM_ARGS, free_port, wait_healthy  # noqa: E402

APP = """
import os, time
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from plotly.subplots import make_subplots

MODE, N = os.environ["CHART_MODE"], int(os.environ["CHART_POINTS"])
LAYOUT = os.environ.get("CHART_LAYOUT", "separate")

@st.cache_resource
def figures():
    x = np.arange(N)
    rng = np.random.default_rng(0)
    out = []
    for i in range(4):
        fig = go.Figure(go.Scatter(x=x, y=np.sin(x / 50 + i) + rng.normal(0, 0.1, N)))
        fig.update_layout(height=340, hovermode="x unified")
        out.append(fig)
    return out

st.sidebar.radio("runs", [f"run{i:03d}" for i in range(100)],
                 captions=[f"step {i}" for i in range(100)])

@st.fragment(run_every=None if MODE == "static" else 1.0)
def charts():
    figs = figures()
    if MODE == "changing":
        figs = [go.Figure(f).update_layout(title=str(time.time())) for f in figs]
    if LAYOUT == "subplots":  # the same 4 traces as rows of one figure
        one = make_subplots(rows=len(figs), cols=1, shared_xaxes=True, vertical_spacing=0.03)
        for i, fig in enumerate(figs):
            one.add_trace(fig.data[0], row=i + 1, col=1)
        one.update_layout(height=340 * len(figs), hovermode="x unified", title=figs[0].layout.title)
        figs = [one]
    for i, fig in enumerate(figs):
        st.plotly_chart(fig, key=f"chart{i}")

charts()
"""


def busy_percent(app: Path, mode: str, points: int, seconds: float, layout: str) -> float:
    port = free_port()
    env = {**os.environ, "CHART_MODE": mode, "CHART_POINTS": str(points), "CHART_LAYOUT": layout}
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true"]
    command += ["--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(
        command, env=env, cwd=app.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            time.sleep(5)  # past the first draw
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def task_seconds() -> float:
                metrics = cdp.send("Performance.getMetrics")["metrics"]
                return next(m["value"] for m in metrics if m["name"] == "TaskDuration")

            t0, w0 = task_seconds(), time.monotonic()
            time.sleep(seconds)
            busy = 100 * (task_seconds() - t0) / (time.monotonic() - w0)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[500, 2000, 8000])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=["separate"],
        choices=["separate", "subplots"],
        help="separate: 4 charts; subplots: the same traces as 4 rows of one figure",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "charts_app.py"
        app.write_text(APP)
        print("renderer busy, % of one core (4 plotly charts, fragment every 1 s)")
        print(f"{'layout':>9s} {'points':>7s} {'static':>7s} {'same':>6s} {'changing':>9s}")
        for layout in args.layouts:
            for points in args.points:
                row = {
                    m: busy_percent(app, m, points, args.seconds, layout)
                    for m in ("static", "same", "changing")
                }
                print(
                    f"{layout:>9s} {points:7d} {row['static']:6.0f}% {row['same']:5.0f}%"
                    f" {row['changing']:8.0f}%",
                    flush=True,
                )


if __name__ == "__main__":
    main()
