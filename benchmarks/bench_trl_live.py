"""A real TRL step on disk → on screen: `python benchmarks/bench_trl_live.py`.

tests/test_browser.py checks that the page follows a live TRL run (a real `GRPOTrainer`,
tools/tiny_trl.py, report_to tensorboard) and prints its latency once; this times it for the
goal. The trainer runs in a subprocess; one headless chromium page is open on its run. For
--seconds, each TensorBoard step first seen on disk by our own reader (polled every 50 ms) is
matched with the first time the page's caption showed that step or a later one (a redraw
shows the newest step; the steps in between are on screen with it).

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
from tools.live_server import launch_chromium, streamlit_server  # noqa: E402

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
            caption = page.get_by_text("steps · last step").first
            caption.wait_for(timeout=60_000)
            time.sleep(3)  # past the first draws
            source = open_source(location)
            on_disk: dict[int, float] = {}
            on_screen: dict[int, float] = {}
            last_disk: int | None = None
            end = time.monotonic() + seconds
            while time.monotonic() < end and trainer.poll() is None:
                for block in source.read().blocks:
                    if block.n:
                        last_disk = int(block.steps[-1])
                if last_disk is not None:
                    on_disk.setdefault(last_disk, time.monotonic())
                text = caption.inner_text()
                shown = int(text.rsplit("last step", 1)[1].split()[0].replace(",", ""))
                on_screen.setdefault(shown, time.monotonic())
                time.sleep(0.05)
            browser.close()
    finally:
        trainer.terminate()
        trainer.wait(timeout=30)
    shown_at = sorted((t, s) for s, t in on_screen.items())
    return sorted(
        next(t for t, step_shown in shown_at if step_shown >= step and t >= written) - written
        for step, written in on_disk.items()
        if step > min(on_disk)
        and any(step_shown >= step and t >= written for t, step_shown in shown_at)
    )


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
