"""The live endpoint: a page following a run polls it for rows, with no Streamlit rerun.

Why: a Streamlit rerun re-renders the page's whole React tree and a changed plotly chart is
rebuilt from scratch, which kept a viewer's browser 40–68 % busy following a 10 Hz run
(docs/benchmarks.md, "The live page"). Here the page's live charts (static/live_charts.js)
ask `GET <base>/klwatch/live?run=…&have=<version>` (the token in a header) twice a second;
the answer is a few bytes when nothing changed, and the downsampled series when the run did.
A Streamlit rerun happens only when what a person must see at once changed — an alert, a
status, the run list — which the answer's `page` key says.

Access: the endpoint serves only what the page that minted the token may show. A token is
minted by a Streamlit session after the login gate (`grant`), names that session's run store
(its allow-listed roots), travels in a header (never the URL), answers 401 while its session
is away (a dropped websocket) and is dropped once the session is gone for GRACE_S, and is
revoked when the gate refuses the session.

Mounted by app.py through `st.App(routes=routes(…))` (`streamlit run app.py`, `make run` and
`klwatch serve` all run it that way). Where the routes are not mounted — app.py run by
Streamlit's AppTest, or embedded without st.App — `mounted()` is False and the page falls
back to plotly charts redrawn by a Streamlit fragment (docs/dashboard.md, "The live path").
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from monitor.dashboard import charts, live_spec, views
from monitor.dashboard.downsample import downsample_indices
from monitor.dashboard.render_cache import RenderCache
from monitor.dashboard.run_view import RunView

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from monitor.dashboard.store import RunStore

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The files the app serves itself (never a CDN): the chart library and the page's script.
STATIC_FILES = {
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}
LIVE_BUDGET = 2000  # points per series sent to a live chart: ~2 per pixel of a wide chart
MAX_SERIES = 64  # series one request may ask for
_lock = threading.Lock()
_mounted = False
_base = ""  # the server's URL prefix ("" or "/team/klwatch"), set by routes()


@dataclass
class Grant:
    store: RunStore
    session_id: str
    alive_at: float = field(default_factory=time.monotonic)  # when its session was last seen


# A session whose websocket dropped (a laptop asleep, a proxy's idle timeout) is not active
# until it reconnects: its token answers 401 meanwhile, and works again once it is back.
# Only a session gone this long loses its token for good.
GRACE_S = 600.0


_grants: dict[str, Grant] = {}


def _no_session(session_id: str) -> bool:
    return False


# Whether a Streamlit session still lives: given by app.py to routes() (monitor/ never
# imports Streamlit); until then no token is valid.
session_alive: Callable[[str], bool] = _no_session


def grant(store: RunStore, session_id: str) -> str:
    """The token a session's page uses to poll `store` (one per session and store)."""
    now = time.monotonic()
    with _lock:
        for token, g in list(_grants.items()):
            if g.session_id == session_id and g.store is store:
                g.alive_at = now
                return token
            if now - g.alive_at > GRACE_S and not session_alive(g.session_id):
                del _grants[token]  # a closed tab's token: a long-lived server keeps none
        token = secrets.token_urlsafe(24)
        _grants[token] = Grant(store, session_id)
        return token


def revoke(session_id: str) -> None:
    """Forget every token of a session (the login gate refused it)."""
    with _lock:
        for token in [t for t, g in _grants.items() if g.session_id == session_id]:
            del _grants[token]


def _lookup(token: str) -> Grant | None:
    """The grant of a token whose session is active now (None: unknown, or its session is
    away — disconnected for now, or gone)."""
    with _lock:
        found = _grants.get(token)
        if found is None or not session_alive(found.session_id):
            return None
        found.alive_at = time.monotonic()
        return found


def mounted() -> bool:
    """True once the endpoint's routes were built for this server process."""
    return _mounted


def url_prefix(base_url_path: str | None) -> str:
    """`server.baseUrlPath` as a path prefix ("" or "/team/klwatch"): Streamlit does not put
    user routes under it, so klwatch puts its own there."""
    base = (base_url_path or "").strip("/")
    return f"/{base}" if base else ""


def live_url() -> str:
    return f"{_base}/klwatch/live"


def static_url(name: str) -> str:
    return f"{_base}/klwatch/static/{name}"


# -- what a page compares -----------------------------------------------------------------


def _digest(value: object) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=8).hexdigest()


def data_version(store: RunStore, run_id: str) -> str | None:
    pulse = store.pulse(run_id)
    return None if pulse is None else _digest(pulse.version)


def page_key(store: RunStore, run_ids: Sequence[str]) -> str:
    """What must make a Streamlit rerun when it changes: each shown run's alert tallies and
    status, and the sidebar (every run's status and alerts, the run list, root problems).
    New rows alone never do: the live charts take them from this endpoint."""
    shown = [views.render_key(p)[1] for r in run_ids if (p := store.pulse(r)) is not None]
    return _digest((shown, _sidebar_digest(store), store.root_problems))


_sidebar_memo: tuple[object, str] | None = None


def _sidebar_digest(store: RunStore) -> str:
    """The sidebar's key, hashed once per summaries list: every viewer polls twice a second,
    and the store hands them all the same list until it recomputes it (at most every 0.5 s)."""
    global _sidebar_memo
    summaries = store.summaries_cached()
    memo = _sidebar_memo
    if memo is not None and memo[0] is summaries:
        return memo[1]
    digest = _digest(views.sidebar_key(summaries))
    _sidebar_memo = (summaries, digest)
    return digest


# -- the rows -------------------------------------------------------------------------------


_payloads: RenderCache[bytes] = RenderCache(max_entries=64)


def resolve_column(view: RunView, key: str) -> np.ndarray:
    """A series as the charts draw it: β from the config when the run does not log it,
    total reward computed as score − β·KL when not logged, NaN for what the run lacks."""
    data = view.data
    if key in data.columns:
        return np.asarray(data.columns[key], dtype=np.float64)
    if key == "beta" and view.meaning.beta is not None:
        return np.full(data.n_rows, float(view.meaning.beta))
    if key == "reward_total":
        beta = resolve_column(view, "beta")
        return charts.reward_total(data.column("reward_mean"), beta, data.column("kl_mean"))
    return np.full(data.n_rows, np.nan)


def rows_payload(
    view: RunView, keys: Sequence[str], smoothing: float, budget: int = LIVE_BUDGET
) -> bytes:
    """The series of `keys` on one shared x (what uPlot draws): every series reduced by M4
    to `budget` points, the union of their picks kept, so each keeps its spikes. With
    smoothing, the debiased EMA of the full-resolution series at the same points. Also, per
    series, how many values ≤ 0 a log axis cannot draw (for the note under a log chart)."""
    steps = view.data.steps
    columns = {key: resolve_column(view, key) for key in keys}
    if steps.size > budget:
        picks = [downsample_indices(steps, col, budget) for col in columns.values()]
        idx = np.unique(np.concatenate(picks)) if picks else np.arange(0)
    else:
        idx = np.arange(steps.size)
    # Values as float32: seven digits are more than a chart or its hover can show, and the
    # answer is 40 % smaller than with float64's seventeen (a viewer gets one a second).
    body: dict[str, Any] = {
        "x": steps[idx],
        "series": {key: col[idx].astype(np.float32) for key, col in columns.items()},
        "nonpositive": {key: int(np.count_nonzero(col <= 0)) for key, col in columns.items()},
        "rows": int(steps.size),
        "last_step": view.data.last_step,
    }
    if smoothing > 0:
        body["smooth"] = {
            key: charts.ema_smooth(col, smoothing)[idx].astype(np.float32)
            for key, col in columns.items()
        }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _cached_rows(
    store: RunStore, view: RunView, version: str, asked: Sequence[str], smoothing: float
) -> bytes:
    keys = charted_keys(view, asked)
    # Every viewer of one run version with one set of options shares one build (per store:
    # two root sets may hold different runs under one id).
    key = (id(store), view.run_id, version, keys, smoothing)
    return _payloads.get(key, lambda: rows_payload(view, keys, smoothing))


@dataclass(frozen=True)
class LiveQuery:
    token: str
    run: str
    have: str  # the data version the page has
    keys: tuple[str, ...]
    smoothing: float
    page: str = ""  # the page key the page was drawn with


class BadQuery(ValueError):
    pass


TOKEN_HEADER = "X-Klwatch-Token"  # a header, not the URL: proxies' access logs keep URLs


def parse_query(params: Any, headers: Any) -> LiveQuery:
    """The request's parameters, checked: a clear 400 names the bad one."""
    token = headers.get(TOKEN_HEADER) or ""
    run = params.get("run") or ""
    if not token:
        raise BadQuery(f"the {TOKEN_HEADER} header is missing")
    if not run:
        raise BadQuery("run is missing")
    keys = tuple(k for k in (params.get("series") or "").split(",") if k)
    if len(keys) > MAX_SERIES:
        raise BadQuery(f"series: at most {MAX_SERIES} names, got {len(keys)}")
    try:
        smoothing = float(params.get("smooth") or 0.0)
    except ValueError:
        raise BadQuery("smooth must be a number") from None
    if not (math.isfinite(smoothing) and 0.0 <= smoothing < 1.0):
        raise BadQuery("smooth must be in [0, 1)")
    smoothing = round(smoothing, 2)  # the slider's steps: arbitrary values build nothing new
    return LiveQuery(
        token, run, params.get("have") or "", keys, smoothing, params.get("page") or ""
    )


def answer(store: RunStore, query: LiveQuery) -> bytes:
    """The endpoint's JSON: the run's version, status, last write, the page key, the rows
    when the caller's version (`have`) is not the current one, and the run's active alerts
    (`news`) when the caller's page key (`page`) is not."""
    store.refresh(query.run)  # cheap unless the watcher saw a write or a poll is due
    pulse = store.pulse(query.run)
    if pulse is None:
        return orjson.dumps({"run": query.run, "loaded": False})
    version = _digest(pulse.version)
    head = {
        "run": query.run,
        "loaded": True,
        "version": version,
        "status": pulse.status,
        "live": pulse.live,
        "age": pulse.seconds_since_write,
        "page": page_key(store, [query.run]),
    }
    if query.page and head["page"] != query.page:
        # The page is out of date and will rerun; until that lands (a second or two on a
        # busy browser) the live charts say the run's active alerts themselves.
        head["news"] = news(store, query.run)
    if query.have != version:
        view = store.view(query.run)
        rows = (
            b"null"
            if view is None
            else _cached_rows(store, view, version, query.keys, query.smoothing)
        )
        head["data"] = orjson.Fragment(rows)
    return orjson.dumps(head)


NEWS_LINES = 8  # as the banner: the Alerts tab has them all


COMPUTED_KEYS = ("beta", "reward_total")  # drawn even when not logged (resolve_column)


def charted_keys(view: RunView, keys: Sequence[str]) -> tuple[str, ...]:
    """The asked series the run can draw: its own, and those the charts compute. Others are
    dropped, so a request cannot make the server build answers for made-up names."""
    return tuple(k for k in keys if k in view.data.columns or k in COMPUTED_KEYS)


def news(store: RunStore, run_id: str) -> list[dict[str, str]]:
    """The run's active alerts, worst first, as the banner words them."""
    view = store.view(run_id)
    if view is None:
        return []
    active = views.active_alerts(view.alerts)[:NEWS_LINES]
    return [{"severity": a.severity, "line": views.alert_line(a)} for a in active]


# -- HTTP -------------------------------------------------------------------------------------


def _live(request: Request) -> Response:
    from starlette.responses import JSONResponse, Response

    try:
        query = parse_query(request.query_params, request.headers)
    except BadQuery as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    found = _lookup(query.token)
    if found is None:
        # The page reloads itself on 401: a new session, its login gate, a new token.
        return JSONResponse({"error": "token unknown or expired"}, status_code=401)
    store = found.store
    if store.entry(query.run) is None:
        return JSONResponse({"error": f"no run {query.run!r} under this dashboard's roots"}, 404)
    body = answer(store, query)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def _static(request: Request) -> Response:
    from starlette.responses import FileResponse, PlainTextResponse

    name = request.path_params["name"]
    kind = STATIC_FILES.get(name)
    if kind is None:
        return PlainTextResponse("not found", status_code=404)
    path = STATIC_DIR / "uplot" / name
    # Versioned by the pinned uPlot release: a browser may keep it for a day.
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "max-age=86400"})


def routes(base_url_path: str | None, alive: Callable[[str], bool]) -> list[BaseRoute]:
    """The endpoint's routes under the server's `server.baseUrlPath`, for
    `st.App(routes=…)`; `alive(session_id)` says whether a Streamlit session still lives."""
    from starlette.routing import Route

    global _mounted, _base, session_alive
    _mounted, _base, session_alive = True, url_prefix(base_url_path), alive
    return [
        Route(f"{_base}/klwatch/live", _live, methods=["GET"]),
        Route(f"{_base}/klwatch/static/{{name}}", _static, methods=["GET"]),
    ]


# -- what the page's component is given ---------------------------------------------------------

LIVE_POLL_MS = 500  # a running run: asked twice a second (new step on screen within ~1.5 s)
IDLE_POLL_MS = 5000  # a finished run: a resume or a rewrite still shows
# While a followed run gets new rows, the page's header and the sidebar's steps and ages are
# refreshed by a rerun this often (alerts and statuses rerun at once: page_key). A full rerun
# costs the browser ~0.3 s of its main thread; an idle run's page never pays it.
SIDEBAR_REFRESH_MS = 60_000


def component_code() -> dict[str, str]:
    """The live charts component's html, css (uPlot's, then klwatch's) and js."""
    css = "\n".join(
        (STATIC_DIR / name).read_text() for name in ("uplot/uPlot.min.css", "live_charts.css")
    )
    return {
        "html": '<div class="kw-live"></div>',
        "css": css,
        "js": (STATIC_DIR / "live_charts.js").read_text(),
    }


@dataclass(frozen=True)
class Viewer:
    """Who the live charts are drawn for: their Streamlit session (its token), and whether
    they paused live updates."""

    session_id: str
    paused: bool = False


def component_data(
    store: RunStore,
    view: RunView,
    options: charts.ChartOptions,
    extra: Sequence[str],
    viewer: Viewer,
) -> dict[str, Any]:
    """What one Streamlit run hands the live charts of a run page: the layout (live_spec),
    where and how often to poll, the session's token and the page key it was drawn with."""
    spec = live_spec.run_spec(view, options, extra)
    source = _source(store, view.run_id, spec["series"], options.smoothing)
    token = grant(store, viewer.session_id)
    return _data(spec, [source], token, paused=viewer.paused, file_stem=view.path.name)


def compare_data(
    store: RunStore,
    shown: Sequence[RunView],
    metric: str,
    options: charts.ChartOptions,
    viewer: Viewer,
) -> dict[str, Any]:
    """The same for the compare page: one chart, each run's `metric` on its own steps (the
    page asks each run for its rows)."""
    spec = live_spec.compare_spec(shown, metric, options)
    sources = [_source(store, v.run_id, [metric], options.smoothing) for v in shown]
    token = grant(store, viewer.session_id)
    return _data(spec, sources, token, paused=viewer.paused, file_stem="compare")


def _source(
    store: RunStore, run_id: str, series: Sequence[str], smoothing: float
) -> dict[str, Any]:
    """One run the page polls: its query, and the page key and version it was drawn with."""
    query = urllib.parse.urlencode(
        {"run": run_id, "series": ",".join(series), "smooth": f"{smoothing:g}"}
    )
    return {
        "run": run_id,
        "query": query,
        "page_key": page_key(store, [run_id]),
        "version": data_version(store, run_id),
    }


def _data(
    spec: live_spec.Spec,
    sources: list[dict[str, Any]],
    token: str,
    *,
    paused: bool,
    file_stem: str,
) -> dict[str, Any]:
    return {
        "spec": spec,
        "sources": sources,
        "token": token,
        "token_header": TOKEN_HEADER,
        "url": live_url(),
        "uplot": static_url("uPlot.iife.min.js"),
        "paused": paused,
        "live_ms": LIVE_POLL_MS,
        "idle_ms": IDLE_POLL_MS,
        "refresh_ms": SIDEBAR_REFRESH_MS,
        "file_stem": file_stem,
    }
