"""NaN written → webhook received: `python benchmarks/bench_webhook_latency.py`.

tests/test_notify.py checks once that a NaN in a live run reaches a local webhook through
`python -m monitor watch` (with a generous bound: it arrives at all). This times --episodes of
them for the latency figure: one `watch` process over a root of --episodes live runs (each
open in a RunWriter, status running), polling at its default interval; one run at a time gets
a NaN row, and the latency is from that write to the receiver's POST for that run. Episodes
are spaced so the watcher's rate limit (digest_after per digest_window_s) never holds one.

Goal: every alert under 5 s (about one poll interval, 2 s by default, plus delivery).

Usage: python benchmarks/bench_webhook_latency.py [--episodes 10] [--interval 2]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor import RunWriter  # noqa: E402

GOAL_S = 5.0
TIMEOUT_S = 30.0
HEALTHY = {"kl_mean": 0.05, "kl_max": 0.15, "beta": 0.1, "reward_mean": 0.5}


class Receiver:
    """A JSON webhook on 127.0.0.1: when each POSTed title first arrived (monotonic)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with receiver.cond:
                    receiver.arrived.setdefault(body.get("title", ""), time.monotonic())
                    receiver.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, title: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: title in self.arrived, timeout)
            return self.arrived.get(title)


def measure(episodes: int, interval: float) -> list[float]:
    receiver = Receiver()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        writers = {f"r{i}": RunWriter(root / f"r{i}", name=f"r{i}") for i in range(episodes)}
        for writer in writers.values():
            for step in range(300):
                writer.log(step, **HEALTHY)
        state = Path(tmp) / "state.json"
        command = [sys.executable, "-m", "monitor", "watch", str(root), "--interval", str(interval)]
        command += ["--notify", receiver.url, "--state", str(state)]
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not (state.exists() and json.loads(state.read_text())["primed"]):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("watch did not prime its state")
                time.sleep(0.05)
            for i, (name, writer) in enumerate(writers.items()):
                writer.log(300, **{**HEALTHY, "kl_mean": math.nan})
                written = time.monotonic()
                title = f"CRITICAL: kl_nonfinite in {name} at step 300"
                arrived = receiver.wait_for(title, TIMEOUT_S)
                if arrived is None:
                    print(f"  episode {i + 1}/{episodes}: {name} not received in {TIMEOUT_S} s")
                else:
                    latencies.append(arrived - written)
                    print(f"  episode {i + 1}/{episodes}: {latencies[-1]:.2f} s")
                time.sleep(2.5 + (i % 4) * interval / 4)  # under the rate limit; varied phase
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            for writer in writers.values():
                writer.close()
            receiver.server.shutdown()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0, help="watch --interval")
    args = parser.parse_args()
    xs = sorted(measure(args.episodes, args.interval))
    print(f"NaN written → webhook received, watch --interval {args.interval:g}")
    if not xs:
        print("  no alert received")
        sys.exit(1)
    p95 = xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)]
    met = len(xs) == args.episodes and xs[-1] < GOAL_S
    print(
        f"  n {len(xs)}/{args.episodes}, p50 {statistics.median(xs):.2f} s, p95 {p95:.2f} s, "
        f"max {xs[-1]:.2f} s; goal every alert < {GOAL_S:g} s: {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
