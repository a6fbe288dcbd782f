"""`streamlit run app.py` on a free 127.0.0.1 port, and headless Debian chromium for it.

Shared by tools/screenshot.py and benchmarks/bench_soak.py (tests/test_browser.py keeps its
own pytest fixtures).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The live charts' status line: "● live · step 1,234 · updated 0 s ago" (live_charts.js).
LIVE_STATUS = ".kw-status-text"
# A JS function returning the page's LivePage (live_charts.js keeps it on the component's
# element), for tests and benchmarks that read the charts' own state.
LIVE_PAGE = """() => {
  for (const host of document.querySelectorAll('*')) {
    if (host.__klwatchLive) return host.__klwatchLive;
  }
  return null;
}"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)  # polling a socket: nothing to wait on instead
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@contextmanager
def streamlit_server(roots: Sequence[Path]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (url, process) of a dashboard over `roots`; stopped on exit."""
    port = free_port()
    root_args = [arg for root in roots for arg in ("--root", str(root))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--", *root_args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "KLWATCH_ROOTS": ""},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def step_on_screen(status: str) -> int | None:
    """The step a live status line shows, or None before its first answer."""
    if " step " not in status:
        return None
    return int(status.split(" step ", 1)[1].split()[0].replace(",", ""))


def follow_steps(
    source: Any, read_status: Callable[[], str], seconds: float, running: Callable[[], bool]
) -> list[float]:
    """For `seconds` (while `running()`), poll a growing run on disk (a monitor.sources
    source) and a page's live status line every 50 ms; return, sorted, the seconds from each
    step first seen on disk to the page first showing that step or a later one (a redraw
    shows the newest step; the steps in between are on screen with it)."""
    on_disk: dict[int, float] = {}
    on_screen: dict[int, float] = {}
    last_disk: int | None = None
    end = time.monotonic() + seconds
    while time.monotonic() < end and running():
        for block in source.read().blocks:
            if block.n:
                last_disk = int(block.steps[-1])
        if last_disk is not None:
            on_disk.setdefault(last_disk, time.monotonic())
        shown = step_on_screen(read_status())
        if shown is not None:
            on_screen.setdefault(shown, time.monotonic())
        time.sleep(0.05)  # two files to compare: polling is the measurement
    shown_at = sorted((t, s) for s, t in on_screen.items())
    return sorted(
        next(t for t, step_shown in shown_at if step_shown >= step and t >= written) - written
        for step, written in on_disk.items()
        if step > min(on_disk)
        and any(step_shown >= step and t >= written for t, step_shown in shown_at)
    )


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
