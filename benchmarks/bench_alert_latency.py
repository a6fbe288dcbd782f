"""Write → alert on screen, one viewer, many episodes: `python benchmarks/bench_alert_latency.py`.

The browser test (tests/test_browser.py) times five NaN episodes, enough for a p50 but not a
p95. This times --episodes of them (default 30) for a run with run.json (klwatch's
RunWriter) and one without (a hand-written logger: metrics.jsonl lines only), each on its own
server with one headless chromium page open on the run.

The run is written at 10 Hz throughout, as a trainer writes it: healthy rows, then from the
episode's first NaN on, NaN rows (a diverged run keeps logging NaN) until the page shows the
`kl_nonfinite` alert, then healthy rows again until it clears. So every alert lands on a
page that is also redrawing new rows once a second. The page notes when the alert's text
first appears in its DOM (a MutationObserver, `Date.now()`); the latency is that minus the
wall-clock time the first NaN line was written. Same machine, same clock.

Usage: python benchmarks/bench_alert_latency.py [--episodes 30] [--only with|without]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from benchmarks.bench_viewers import BROWSER_ARGS, WATCH_FOR_TEXT, LiveRun  # noqa: E402
from monitor import RunWriter  # noqa: E402
from tools.live_server import CHROMIUM, streamlit_server  # noqa: E402
from tools.plain_logger import PlainLogger  # noqa: E402

ALERT_TIMEOUT_S = 15.0
CLEAR_ROWS = 15  # healthy rows after an episode: kl_nonfinite clears after 10 quiet rows
# The goal (issue 10), with and without run.json. tests/test_browser.py only checks that each
# alert shows at all; the target lives here.
GOAL_P50_S = 1.0
GOAL_P95_S = 2.0


def episodes(root: Path, run_name: str, count: int, label: str) -> list[float]:
    run_dir = root / run_name
    writer = RunWriter(run_dir, name=run_name) if label == "with" else PlainLogger(run_dir)
    trainer = LiveRun(writer)
    latencies: list[float] = []
    try:
        with streamlit_server([root]) as (url, _proc), sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{url}/?run={root.name}/{run_name}")
            page.get_by_text("Healthy").first.wait_for(timeout=60_000)
            time.sleep(3)  # past the first draws
            for episode in range(count):
                step, written = trainer.diverge()
                # Watch from now on (a check at once, then one per DOM change): the page
                # cannot show a row within the milliseconds this takes.
                page.evaluate(WATCH_FOR_TEXT, f"kl_nonfinite since step {step}")
                deadline = time.monotonic() + ALERT_TIMEOUT_S
                seen = None
                while seen is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    seen = page.evaluate("window.__klwatchSeen")
                trainer.recover()
                if seen is None:
                    print(f"  {label}: episode {episode}: step {step} not shown in 15 s")
                    continue
                latencies.append(seen / 1000 - written)
                print(f"  {label} run.json: episode {episode + 1}/{count}: {latencies[-1]:.2f} s")
                time.sleep(CLEAR_ROWS * 0.1 + 1.0)  # cleared, and the page redrawn
            browser.close()
    finally:
        trainer.close()
    return latencies


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no episode shown"
    xs = sorted(latencies)
    p95 = xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)]
    over_1, over_2 = sum(x > 1 for x in xs), sum(x > 2 for x in xs)
    p50 = statistics.median(xs)
    met = p50 <= GOAL_P50_S and p95 <= GOAL_P95_S
    return (
        f"n {len(xs)}, p50 {p50:.2f} s, p95 {p95:.2f} s, "
        f"max {xs[-1]:.2f} s, over 1 s: {over_1}, over 2 s: {over_2}; "
        f"goal p50 ≤ {GOAL_P50_S:g} s, p95 ≤ {GOAL_P95_S:g} s: {'met' if met else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--only", choices=["with", "without"], default=None)
    args = parser.parse_args()
    labels = [args.only] if args.only else ["with", "without"]
    results = {}
    for label in labels:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "runs"
            root.mkdir()
            results[label] = episodes(root, "live", args.episodes, label)
    print("write → alert on screen, one viewer, run written at 10 Hz")
    for label, latencies in results.items():
        print(f"  {label} run.json: {summary(latencies)}")


if __name__ == "__main__":
    main()
