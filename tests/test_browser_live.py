"""The live path in a real browser: the run page's canvas charts (live_charts.js) following
a 10 Hz run through klwatch's endpoint, with no Streamlit rerun per row.

What must hold on this path (issue: a live page that costs the browser little): new rows
without reruns; an alert in the page's text at once; hover, PNG export, log y, smoothing
and URL state; the theme's colours; a hidden tab that stops asking and catches up; a login
gate that keeps rows behind it; and no request leaving the server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from monitor import RunWriter
from tests.test_browser import (  # the fixtures too: chromium, the writer, server, page
    ARTIFACTS,
    KL_CHART,
    LiveWriter,
    chromium_present,
    live_writer,
    page,
    server,
    streamlit_server,
)
from tools.live_server import LIVE_PAGE, LIVE_STATUS

__all__ = ["chromium_present", "live_writer", "page", "server"]  # fixtures, used by name

pytestmark = pytest.mark.browser
expect = sync_api.expect


def live(page: Any, expression: str) -> Any:
    """Evaluate `expression` over `p`, the page's LivePage."""
    return page.evaluate(f"() => {{ const p = ({LIVE_PAGE})(); return {expression}; }}")


@pytest.fixture
def timed_server(live_writer: LiveWriter, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    timings = tmp_path / "timings.jsonl"
    with streamlit_server(live_writer.run_dir.parent, env={"KLWATCH_TIMINGS": str(timings)}) as url:
        yield url, timings


def page_runs(timings: Path) -> int:
    return len(timings.read_text().splitlines()) if timings.exists() else 0


def test_rows_arrive_without_reruns_and_an_alert_is_announced(
    timed_server: tuple[str, Path], page: Any, live_writer: LiveWriter
) -> None:
    url, timings = timed_server
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{url}/?run=runs/live")
    status = page.locator(LIVE_STATUS)
    expect(status).to_contain_text("● live · step", timeout=60_000)
    time.sleep(3)  # the first pass of the background checker settles the sidebar once
    runs_before = page_runs(timings)
    step_before = live(page, "p.rows[0].last_step")
    time.sleep(5)  # 50 rows at 10 Hz
    step_after = live(page, "p.rows[0].last_step")
    assert step_after - step_before >= 30, (step_before, step_after)
    # The rows came through the endpoint: at most one rerun (a sidebar refresh) in 5 s.
    assert page_runs(timings) - runs_before <= 1, timings.read_text()
    polls = [u for u in requested if "/klwatch/live?" in u]
    assert len(polls) >= 5

    live_writer.inject_nan()
    # The alert is page text a screen reader announces (the banner: role="alert"), not
    # only a mark on a canvas.
    alert = page.get_by_role("alert").filter(has_text="kl_nonfinite since step")
    expect(alert).to_be_visible(timeout=15_000)
    card = page.locator(KL_CHART)
    expect(card).to_contain_text("kl_nonfinite (critical)")  # its lane, named
    # Hovering its marker shows its message.
    page.wait_for_function(f"() => ({LIVE_PAGE})().panels[0].panel.alerts.length > 0")
    x = live(page, "p.panels[0].plot.valToPos(p.panels[0].panel.alerts[0].step, 'x')")
    box = card.locator(".u-over").first.bounding_box()
    # (The writer stopped at the NaN: its marker sits on the plot's right edge.)
    page.mouse.move(box["x"] + min(x, box["width"] - 2), box["y"] + box["height"] / 2)
    expect(page.locator(".kw-tooltip")).to_contain_text("kl_nonfinite")
    outside = [u for u in requested if not u.startswith((url, "data:", "blob:"))]
    assert not outside, outside
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-live-path.png"), full_page=True)


def test_hover_png_log_y_and_smoothing_from_the_url(server: str, page: Any) -> None:
    page.goto(f"{server}/?run=runs/live&log=1&smooth=0.6")
    card = page.locator(KL_CHART)
    expect(card.locator("canvas").first).to_be_visible(timeout=60_000)
    expect(page.locator(LIVE_STATUS)).to_contain_text("step", timeout=30_000)
    # Log y and smoothing from the URL: a log axis, and each series twice (raw + EMA).
    assert live(page, "p.panels[0].plot.scales.y.distr") == 3
    n_series = live(page, "p.panels[0].panel.series.length")
    assert live(page, "p.panels[0].plot.series.length") == 1 + 2 * n_series
    # Hover: the legend shows every series' value at the cursor.
    over = card.locator(".u-over").first
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    values = card.locator(".u-legend .u-value")
    expect(values.nth(1)).not_to_have_text("--", timeout=5_000)
    assert all(v.strip() not in ("", "--") for v in values.all_inner_texts()[1:])
    # PNG export of one chart, named after the run and the chart.
    with page.expect_download() as download:
        card.locator(".kw-png").click()
    assert download.value.suggested_filename == "klwatch-live-kl.png"
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_hidden_tab_stops_asking_and_catches_up(server: str, page: Any) -> None:
    page.goto(f"{server}/?run=runs/live")
    expect(page.locator(LIVE_STATUS)).to_contain_text("step", timeout=60_000)
    # When each poll was sent, in the page's own clock (resource timing: every fetch).
    polls_since = """(t) => performance.getEntriesByType('resource')
      .filter(e => e.name.includes('/klwatch/live?') && e.startTime > t).length"""
    performance_setsize = "() => performance.setResourceTimingBufferSize(100000)"
    page.evaluate(performance_setsize)
    hide = """(state) => {
      const at = performance.now();
      Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
      document.dispatchEvent(new Event('visibilitychange'));
      return at;
    }"""
    hidden_at = page.evaluate(hide, "hidden")
    step_hidden = live(page, "p.rows[0].last_step")
    time.sleep(4)
    # Nothing asked while hidden (one poll may have been in flight at the switch).
    assert page.evaluate(polls_since, hidden_at + 1000) == 0
    shown_at = page.evaluate(hide, "visible")
    page.wait_for_function(
        f"() => ({LIVE_PAGE})().rows[0].last_step >= {step_hidden + 30}", timeout=5_000
    )
    assert page.evaluate(polls_since, shown_at) >= 1  # caught up by asking at once


def test_the_live_charts_take_the_dark_theme(live_writer: LiveWriter, page: Any) -> None:
    with streamlit_server(live_writer.run_dir.parent, flags=["--theme.base", "dark"]) as url:
        page.goto(f"{url}/?run=runs/live")
        expect(page.locator(KL_CHART).locator("canvas").first).to_be_visible(timeout=60_000)
        text = live(page, "p.theme().text")
        title = page.locator(f"{KL_CHART} .kw-title").evaluate("e => getComputedStyle(e).color")
        # A theme switched while the page is open (no rerun): the canvases follow it.
        live(page, "p.root.style.setProperty('--st-text-color', 'rgb(1, 2, 3)')")
        page.wait_for_function(
            f"() => ({LIVE_PAGE})().themeKey.includes('rgb(1, 2, 3)')", timeout=10_000
        )
    for color in (text, title):
        assert sum(rgb(color)) > 3 * 180, color  # light text on the dark background


def rgb(color: str) -> list[int]:
    """'#fafafa' or 'rgb(250, 250, 250)' → [250, 250, 250]."""
    if color.startswith("#"):
        return [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return [int(float(c)) for c in color[color.index("(") + 1 : color.index(")")].split(",")[:3]]


def test_behind_a_login_the_endpoint_serves_nothing(
    live_writer: LiveWriter, page: Any, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        "[auth]\n"
        'redirect_uri = "http://127.0.0.1:8501/oauth2callback"\n'
        f'cookie_secret = "{"s" * 32}"\n'
        'client_id = "id"\nclient_secret = "secret"\n'
        'server_metadata_url = "http://127.0.0.1:1/.well-known/openid-configuration"\n'
    )
    root = live_writer.run_dir.parent
    with streamlit_server(root, flags=["--secrets.files", str(secrets)]) as url:
        page.goto(f"{url}/?run=runs/live")
        expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
        time.sleep(1)
        assert page.locator(".kw-live").count() == 0  # no live charts, so no token
        assert "live" not in page.locator('[data-testid="stMain"]').inner_text()
        for headers in ({}, {"X-Klwatch-Token": "guess"}):
            request = urllib.request.Request(f"{url}/klwatch/live?run=runs/live", headers=headers)
            try:
                urllib.request.urlopen(request, timeout=5)
                raise AssertionError(f"{headers} answered without a session's token")
            except urllib.error.HTTPError as e:
                assert e.code in (400, 401)
                assert "kl_mean" not in json.dumps(json.loads(e.read()))


def test_under_a_base_url_path_the_charts_find_their_endpoint(
    live_writer: LiveWriter, page: Any
) -> None:
    """Behind a proxy at /team/klwatch: Streamlit serves the page there, and klwatch puts its
    own routes there too (Streamlit does not prefix user routes)."""
    root = live_writer.run_dir.parent
    with streamlit_server(root, flags=["--server.baseUrlPath", "team/klwatch"]) as url:
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{url}/team/klwatch/?run=runs/live")
        expect(page.locator(LIVE_STATUS)).to_contain_text("● live · step", timeout=60_000)
        expect(page.locator(KL_CHART).locator("canvas").first).to_be_visible()
    polls = [u for u in requested if "/klwatch/live?" in u]
    assert polls and all(u.startswith(f"{url}/team/klwatch/klwatch/live?") for u in polls)
    assert any(u == f"{url}/team/klwatch/klwatch/static/uPlot.iife.min.js" for u in requested)


def test_the_compare_page_follows_each_run_on_its_own_steps(
    live_writer: LiveWriter, page: Any
) -> None:
    """Two runs on one live chart: the 10 Hz run and one logging every 3rd step; both drawn
    (aligned by step), both in the legend with their health, and the live run's NaN makes
    the page rerun so its health reads "critical"."""
    root = live_writer.run_dir.parent
    with RunWriter(root / "sparse", name="sparse") as writer:
        for step in range(0, 300, 3):
            writer.log(step, kl_mean=0.03, kl_max=0.1, beta=0.1, reward_mean=0.4)
    with streamlit_server(root) as url:
        page.goto(f"{url}/?run=runs/live&run=runs/sparse")
        card = page.locator('.kw-card[data-chart="compare"]')
        expect(card.locator("canvas").first).to_be_visible(timeout=60_000)
        expect(page.locator(LIVE_STATUS)).to_contain_text("2 runs", timeout=30_000)
        expect(card.locator(".u-legend")).to_contain_text("runs/live · no warnings")
        expect(card.locator(".u-legend")).to_contain_text("runs/sparse · no warnings")
        # Both runs' values are on the chart, the sparse one spanned between its steps.
        columns = live(
            page, "p.panels[0].plot.data.slice(1).map(c => c.filter(v => v != null).length)"
        )
        assert columns[0] >= 300 and 90 <= columns[1] <= 110, columns
        live_writer.inject_nan()
        table = page.locator('[data-testid="stDataFrame"]')
        expect(table).to_contain_text("critical", timeout=15_000)
        expect(card.locator(".u-legend")).to_contain_text("runs/live · critical")


def test_a_run_that_leaves_the_roots_redraws_the_page(tmp_path: Path, page: Any) -> None:
    """The endpoint answers 404 for a run no longer under the roots; the page asks for a
    rerun, which redraws it without the run, rather than polling a run that is gone."""
    import shutil

    root = tmp_path / "runs"
    with RunWriter(root / "doomed", name="doomed") as writer:
        for step in range(50):
            writer.log(step, kl_mean=0.05, kl_max=0.1, beta=0.1, reward_mean=0.5)
    with streamlit_server(root) as url:
        page.goto(f"{url}/?run=runs/doomed")
        expect(page.locator(KL_CHART).locator("canvas").first).to_be_visible(timeout=60_000)
        shutil.rmtree(root / "doomed")
        expect(page.get_by_text("No runs found under").first).to_be_visible(timeout=30_000)
        expect(page.locator(".kw-live")).to_have_count(0)  # no charts left polling a ghost
