"""Server memory under live refresh: is it flat with a viewer attached?

Starts `streamlit run app.py` on a free 127.0.0.1 port over a temporary root, a trainer-like
writer appending records at ~10 Hz, and one headless chromium viewer on the run's live page.
Samples the server's RSS (process tree) every few seconds and prints the growth after
warm-up, as MB and as MB/hour — the baseline is the same server's RSS after warm-up.
Streamlit has known leaks with long-lived reruns, so this is measured, not assumed.

Usage: python benchmarks/bench_soak.py [--minutes 60] [--sample-s 10]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor import RunWriter  # noqa: E402
from tools.live_server import launch_chromium, streamlit_server  # noqa: E402


def tree_rss_mb(proc: psutil.Process) -> float:
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 1e6


def writer_loop(run_dir: Path, stop: threading.Event) -> None:
    import math
    import random

    with RunWriter(run_dir, config={"kl_controller": "adaptive", "target_kl": 0.05}) as w:
        step = 0
        while not stop.is_set():
            kl = 0.05 * (1 - math.exp(-step / 500)) * random.lognormvariate(0, 0.1)
            w.log(step, kl_mean=kl, kl_max=kl * 4, beta=0.1, reward_mean=math.log1p(step))
            step += 1
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "soak"
        stop = threading.Event()
        writer = threading.Thread(target=writer_loop, args=(root / "live", stop), daemon=True)
        writer.start()
        samples: list[tuple[float, float]] = []
        try:
            with streamlit_server([root]) as (url, server), sync_playwright() as pw:
                proc = psutil.Process(server.pid)
                browser = launch_chromium(pw)
                page = browser.new_page()
                page.goto(f"{url}/?run=soak/live")
                start = time.monotonic()
                end = start + args.minutes * 60
                while time.monotonic() < end:
                    page.wait_for_timeout(args.sample_s * 1000)
                    elapsed = time.monotonic() - start
                    samples.append((elapsed, tree_rss_mb(proc)))
                    print(f"t={elapsed:7.0f} s  server RSS {samples[-1][1]:7.1f} MB", flush=True)
                browser.close()
        finally:
            stop.set()
            writer.join(timeout=10)  # before the temporary root is removed under it
    after = [(t, m) for t, m in samples if t >= args.warmup_s] or samples
    t0, m0 = after[0]
    t1, m1 = after[-1]
    rate = (m1 - m0) / max(t1 - t0, 1) * 3600
    print(
        f"soak        {args.minutes:.0f} min with a live viewer: RSS after warm-up {m0:.0f} MB"
        f" -> end {m1:.0f} MB | growth {m1 - m0:+.1f} MB ({rate:+.1f} MB/hour) "
        f"| ratio end/warm {m1 / m0:.3f}"
    )


if __name__ == "__main__":
    main()
