"""A team on one dashboard: what does each extra live viewer cost the server?

One `streamlit run app.py` over a temporary root with 100 finished runs of 2,000 steps and
one live run written at 10 Hz (by this process, not the server). For N = 1, 2, 4, 8 headless
chromium pages on the live run, plus 2 pages on finished runs, it measures:

  * server CPU (the streamlit process tree, psutil, over --measure-s seconds), and the
    marginal CPU per extra viewer of the live run (baseline: the same server with 1 viewer,
    measured in this run);
  * write → alert latency per page: a NaN is written, each page is watched for its
    kl_nonfinite alert (p50 / p95 over pages × trials);
  * open time (goto → KL chart drawn) and switch time (sidebar click → new run's chart);
  * pages that failed to draw, and the CPU the browsers took.

Usage: python benchmarks/bench_viewers.py [--viewers 1 2 4 8] [--measure-s 30] [--trials 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from benchmarks._common import write_run  # noqa: E402
from monitor import RunWriter  # noqa: E402
from tools.live_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402
from tools.plain_logger import PlainLogger  # noqa: E402

# Background pages must not be throttled: each is a viewer looking at its own screen.
BROWSER_ARGS = [
    *CHROMIUM_ARGS,
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
# Each page notes (Date.now()) when the text first appears in its DOM, so timing it costs the
# page one check per DOM change, not a scan from the benchmark every 50 ms per page (which,
# at 8 pages, took more CPU than the pages themselves). Same machine, same wall clock.
WATCH_FOR_TEXT = """(text) => {
  window.__klwatchSeen = null;
  const check = () => {
    if (window.__klwatchSeen === null && document.body.textContent.includes(text)) {
      window.__klwatchSeen = Date.now();
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  check();
}"""
# A drawn chart: the live path's canvas (uPlot) or the fallback's plotly chart.
CHART = ".kw-live canvas, .js-plotly-plot"
HEALTHY = {"kl_mean": 0.05, "kl_max": 0.15, "beta": 0.1, "reward_mean": 0.5}
DIVERGED = {**HEALTHY, "kl_mean": math.nan}


class LiveRun:
    """A trainer stand-in at 10 Hz over `writer` (klwatch's RunWriter, or a plain logger).

    `inject_nan()` writes one NaN and pauses writing until `resume()` (so the alert stays
    active while pages are timed); `diverge()` makes every row NaN until `recover()`, as a
    diverged trainer keeps logging."""

    def __init__(self, writer: RunWriter | PlainLogger) -> None:
        self.writer = writer
        self.step = 0
        for _ in range(300):
            self._log(HEALTHY)
        self.row = HEALTHY  # what the loop writes
        self.first_nan: tuple[int, float] | None = None  # (step, wall time) since diverge()
        self.lock = threading.Lock()
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _log(self, values: dict[str, float]) -> None:
        self.writer.log(self.step, **values)
        self.step += 1

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            with self.lock:
                if self.paused.is_set():
                    continue
                self._log(self.row)
                if self.row is DIVERGED and self.first_nan is None:
                    self.first_nan = (self.step - 1, time.time())

    def inject_nan(self) -> tuple[int, float]:
        self.paused.set()
        time.sleep(0.15)  # let the loop see the pause
        step = self.step
        self._log(DIVERGED)
        return step, time.monotonic()

    def resume(self) -> None:
        for _ in range(12):  # quiet rows clear the episode
            self._log(HEALTHY)
        self.paused.clear()

    def diverge(self) -> tuple[int, float]:
        """Write NaN rows from the next tick on; (step, wall time) of the first one, once
        it is written."""
        with self.lock:
            self.first_nan, self.row = None, DIVERGED
        while True:
            with self.lock:
                if self.first_nan is not None:
                    return self.first_nan
            time.sleep(0.01)

    def recover(self) -> None:
        with self.lock:
            self.row = HEALTHY

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.writer.close()


def tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [proc, *proc.children(recursive=True)]
    return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def chromium_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "chrom" in (p.info["name"] or "") or any(
                "chromium" in c for c in (p.info["cmdline"] or [])
            ):
                found.append(p)
    return found


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def open_pages(browser, url: str, run_ids: list[str]) -> tuple[list, list[float], int]:
    pages, open_times, failed = [], [], 0
    for rid in run_ids:
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        t0 = time.monotonic()
        page.goto(f"{url}/?run={rid}")
        try:
            page.locator(CHART).first.wait_for(timeout=30_000)
            open_times.append(time.monotonic() - t0)
        except Exception:
            failed += 1
        pages.append(page)
    return pages, open_times, failed


def blank_page(page) -> bool:
    """The viewer lost its run: the fallback's ticker has no data, or the live charts never
    got an answer from the endpoint."""
    return bool(
        page.get_by_text("no data yet").count()
        or page.locator(".kw-status-text", has_text="connecting").count()
    )


def server_timings(path: Path, kind: str) -> list[float]:
    """Server-side seconds of full page runs of one kind (app.py's KLWATCH_TIMINGS log)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["seconds"] for r in lines if r["kind"] == kind]


def measure(args: argparse.Namespace, url: str, server: psutil.Process, live: LiveRun, n: int):
    timings = Path(os.environ["KLWATCH_TIMINGS"])
    timings.write_text("")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        live_ids = ["bench/live"] * n + ["bench/run000", "bench/run001"]
        log(f"{n} viewers: opening {len(live_ids)} pages")
        pages, open_times, failed = open_pages(browser, url, live_ids)
        time.sleep(3)  # settle
        log(f"{n} viewers: measuring CPU for {args.measure_s:g} s")
        procs, browsers = tree(server), chromium_processes()
        s0, b0, w0 = cpu_seconds(procs), cpu_seconds(browsers), time.monotonic()
        time.sleep(args.measure_s)
        wall = time.monotonic() - w0
        server_cpu = 100 * (cpu_seconds(procs) - s0) / wall
        browser_cpu = 100 * (cpu_seconds(browsers) - b0) / wall
        latencies, missed = [], 0
        for trial in range(args.trials):
            log(f"{n} viewers: alert trial {trial + 1} of {args.trials}")
            live.paused.set()
            time.sleep(0.15)  # the writer is paused: the NaN goes at live.step
            text = f"kl_nonfinite since step {live.step}"
            for pg in pages[:n]:
                pg.evaluate(WATCH_FOR_TEXT, text)
            step, written = live.inject_nan()
            assert text.endswith(str(step))
            written_wall = time.time() - (time.monotonic() - written)
            seen: dict[int, float] = {}
            deadline = written + 15
            while len(seen) < n and time.monotonic() < deadline:
                time.sleep(0.5)  # the pages time themselves: a cheap read, twice a second
                for i, pg in enumerate(pages[:n]):
                    at = pg.evaluate("window.__klwatchSeen")
                    if i not in seen and at is not None:
                        seen[i] = at / 1000 - written_wall
            latencies += seen.values()
            missed += n - len(seen)
            live.resume()
            time.sleep(2)
        # Before the switch below: a page that just switched says "connecting" until its
        # first answer, which is not a lost run.
        blank = sum(1 for pg in pages if blank_page(pg))
        # Switch: the first live page clicks a finished run in the sidebar.
        switch = math.nan
        with contextlib.suppress(Exception):
            page = pages[0]
            t0 = time.monotonic()
            page.get_by_text("bench/run002", exact=False).first.click()
            page.get_by_role("heading", name="run002").first.wait_for(timeout=30_000)
            switch = time.monotonic() - t0
        browser.close()
    return {
        "server_open": server_timings(timings, "open"),
        "server_switch": server_timings(timings, "switch"),
        "server_redraw": server_timings(timings, "redraw"),
        "n": n,
        "server_cpu": server_cpu,
        "browser_cpu": browser_cpu,
        "latencies": latencies,
        "missed": missed,
        "open": open_times,
        "switch": switch,
        "slow_open": failed,  # not drawn within 30 s of goto (CPU starvation)
        "blank": blank,  # still "no data yet" at the end: the viewer lost its run (a bug)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--measure-s", type=float, default=30.0)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KLWATCH_TIMINGS"] = str(Path(tmp) / "timings.jsonl")
        root = Path(tmp) / "bench"
        for i in range(100):
            write_run(root / f"run{i:03d}", 2000, written_s_ago=3600)  # finished
        live = LiveRun(RunWriter(root / "live", name="live"))
        try:
            with streamlit_server([root]) as (url, proc):
                server = psutil.Process(proc.pid)
                results = [measure(args, url, server, live, n) for n in args.viewers]
        finally:
            live.close()
    base = results[0]
    head = ("viewers", "server CPU", "marginal/viewer", "browsers CPU", "alert p50/p95")
    print(" ".join(f"{h:>15}" for h in head), "  missed  open p50  switch  slow open  blank")
    for r in results:
        extra = r["n"] - base["n"]
        marginal = (r["server_cpu"] - base["server_cpu"]) / extra if extra else math.nan
        lat = r["latencies"]
        p50 = statistics.median(lat) if lat else math.nan
        p95 = percentile(lat, 0.95) if lat else math.nan
        op = statistics.median(r["open"]) if r["open"] else math.nan
        print(
            f"{r['n']:>8} {r['server_cpu']:>10.0f}% {marginal:>15.1f}% {r['browser_cpu']:>12.0f}% "
            f"{p50:>6.2f}/{p95:<6.2f}s {r['missed']:>7} {op:>8.2f}s {r['switch']:>6.2f}s "
            f"{r['slow_open']:>10} {r['blank']:>6}"
        )
    print("(+2 pages on finished runs in every row; CPU in % of one core; 2-core machine)")
    print("server side (app.py run time):")
    for r in results:
        opens, switches, redraws = r["server_open"], r["server_switch"], r["server_redraw"]
        print(
            f"  {r['n']} viewers: open p50 {_p50(opens):.3f} s max {_max(opens):.3f} s | "
            f"switch {_max(switches):.3f} s | redraw p50 {_p50(redraws):.3f} s "
            f"({len(redraws)} redraws in the run)"
        )


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _max(values: list[float]) -> float:
    return max(values) if values else math.nan


if __name__ == "__main__":
    main()
