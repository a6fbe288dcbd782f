"""A real TRL step on disk → on screen: `python benchmarks/bench_trl_live.py`.

tests/test_browser.py checks that the page follows a live TRL run (a real `GRPOTrainer`,
tools/tiny_trl.py, report_to tensorboard) and prints its latency once; this times it for the
goal. The trainer runs in a subprocess; one headless chromium page is open on its run. For
--seconds, each TensorBoard step first seen on disk by our own reader (polled every 50 ms) is
matched with the first time the page's live status line showed that step or a later one (a
redraw shows the newest step; the steps in between are on screen with it).

Goal: p50 ≤ 1 s.

Usage: python benchmarks/bench_trl_live.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from monitor.sources import find_runs, open_source  # noqa: E402
from tools.live_server import (  # noqa: E402
    LIVE_STATUS,
    follow_steps,
    launch_chromium,
    streamlit_server,
)

GOAL_P50_S = 1.0


def measure(root: Path, seconds: float) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    trainer = subprocess.Popen(
        [sys.executable, "tools/tiny_trl.py", str(root / "grpo"), "--steps", "100000"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        locations: list = []
        while not locations and time.monotonic() < deadline:
            locations = [loc for loc in find_runs(root) if loc.format == "tensorboard"]
            time.sleep(0.2)
        if not locations:
            raise RuntimeError("TRL wrote no TensorBoard events in 120 s")
        (location,) = locations
        run_id = f"{root.name}/" + location.path.relative_to(root).as_posix()
        with streamlit_server([root]) as (url, _proc), sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_context(viewport={"width": 1440, "height": 1100}).new_page()
            page.goto(f"{url}/?run={run_id}")
            status = page.locator(LIVE_STATUS)
            status.filter(has_text="step").wait_for(timeout=60_000)
            time.sleep(3)  # past the first draws
            latencies = follow_steps(
                open_source(location),
                status.inner_text,
                seconds,
                running=lambda: trainer.poll() is None,
            )
            browser.close()
    finally:
        trainer.terminate()
        trainer.wait(timeout=30)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        xs = measure(root, args.seconds)
    print(f"TRL step on disk → on screen, one viewer, {args.seconds:g} s")
    if not xs:
        print("  no step followed")
        sys.exit(1)
    p50 = statistics.median(xs)
    p95 = xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)]
    verdict = "met" if p50 <= GOAL_P50_S else "NOT met"
    print(
        f"  n {len(xs)}, p50 {p50:.2f} s, p95 {p95:.2f} s, max {xs[-1]:.2f} s; "
        f"goal p50 ≤ {GOAL_P50_S:g} s: {verdict}"
    )


if __name__ == "__main__":
    main()
