"""Retake docs/screenshot.png: the dashboard on the committed sample runs, in headless chromium.

Usage: .venv/bin/python tools/screenshot.py [--run sample_runs/no-penalty-hacking] [--out PATH]
       .venv/bin/python tools/screenshot.py --root runs/trl --run trl/<id> --out docs/x.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.live_server import REPO, launch_chromium, streamlit_server

EXCEPTION = '[data-testid="stException"]'


def wait_for_charts(page: Any) -> None:
    """Until the KL chart is drawn; a page that shows a traceback instead ends the tool
    (never commit a picture of an exception as "the page")."""
    page.locator(f".kw-live canvas, .js-plotly-plot, {EXCEPTION}").first.wait_for(timeout=60_000)
    broken = page.locator(EXCEPTION)
    if broken.count():
        raise SystemExit(f"the page shows an exception:\n{broken.first.inner_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="sample_runs/no-penalty-hacking")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    parser.add_argument("--root", type=Path, default=REPO / "sample_runs", help="runs to serve")
    args = parser.parse_args()
    with streamlit_server([args.root]) as (url, _), sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{url}/?run={args.run}")
        wait_for_charts(page)
        page.wait_for_timeout(3000)  # the background checker counts every run's alerts …
        page.reload()  # … and a fresh render shows them all in the sidebar
        wait_for_charts(page)
        page.wait_for_timeout(2500)  # let the other charts finish drawing
        page.screenshot(path=args.out, full_page=False)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
