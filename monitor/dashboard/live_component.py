"""The run page's live charts on the page: the component (static/live_charts.js) and what
one Streamlit run hands it — the layout (live_spec), where to poll (live_api) and how often.

The component keeps its DOM across reruns (it is keyed), takes new rows from the live
endpoint and asks for a rerun only when the page must change (live_api.page_key).
"""

from __future__ import annotations

import urllib.parse
from functools import cache
from typing import Any

import streamlit as st

from monitor.dashboard import live_api, live_spec
from monitor.dashboard.charts import ChartOptions
from monitor.dashboard.run_view import RunView
from monitor.dashboard.store import RunStore

LIVE_POLL_MS = 500  # a running run: asked twice a second (new step on screen within ~1.5 s)
IDLE_POLL_MS = 5000  # a finished run: a resume or a rewrite still shows
# While following a live run, the sidebar's steps and ages are refreshed by a rerun this
# often (alerts and statuses rerun at once; see live_api.page_key).
SIDEBAR_REFRESH_MS = 30_000


@cache
def _component() -> Any:
    static = live_api.STATIC_DIR
    css = "\n".join(
        (static / name).read_text() for name in ("uplot/uPlot.min.css", "live_charts.css")
    )
    return st.components.v2.component(
        "klwatch.live_charts",
        html='<div class="kw-live"></div>',
        css=css,
        js=(static / "live_charts.js").read_text(),
    )


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def live_charts(
    store: RunStore,
    view: RunView,
    options: ChartOptions,
    extra: tuple[str, ...],
    *,
    paused: bool,
) -> None:
    """Mount the live charts of `view` (one component; its DOM survives reruns)."""
    spec = live_spec.run_spec(view, options, extra)
    query = urllib.parse.urlencode(
        {
            "token": live_api.grant(store, session_id()),
            "run": view.run_id,
            "series": ",".join(spec["series"]),
            "smooth": f"{options.smoothing:g}",
        }
    )
    _component()(
        key="live_charts",
        data={
            "run": view.run_id,
            "spec": spec,
            "url": live_api.live_url(),
            "uplot": live_api.static_url("uPlot.iife.min.js"),
            "query": query,
            "page_key": live_api.page_key(store, [view.run_id]),
            "paused": paused,
            "live_ms": LIVE_POLL_MS,
            "idle_ms": IDLE_POLL_MS,
            "refresh_ms": SIDEBAR_REFRESH_MS,
            "file_stem": view.path.name,
        },
        on_page_change=lambda: None,
    )
