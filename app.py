"""klwatch dashboard — layout only.

    streamlit run app.py                                   # sample_runs/ and runs/
    streamlit run app.py -- --root /mnt/rlhf --root runs   # other roots (repeatable)
    KLWATCH_ROOTS=/a:/b streamlit run app.py               # same, from the environment
    streamlit run app.py -- --root /nfs/runs --poll        # network disks: poll, no inotify

Reading runs (monitor.dashboard.store), alerts (monitor.alerts), figures
(monitor.dashboard.charts) and view logic (monitor.dashboard.views) live in monitor/; this
script only places them on the page.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import streamlit as st
from streamlit.components.v2.types import ComponentRenderer
from streamlit.delta_generator import DeltaGenerator

from monitor.dashboard import auth, charts, live_api, views
from monitor.dashboard.render_cache import RenderCache
from monitor.dashboard.run_view import AlertTally, HealthRow, RunSummary, RunView
from monitor.dashboard.store import RunStore
from monitor.presets import preset_from_spec

APP_DIR = Path(__file__).resolve().parent
LIVE_INTERVAL_S = 0.5  # check twice a second: a new record on screen within ~1 s
IDLE_INTERVAL_S = 5.0  # when none of the shown runs is running
DATA_REDRAW_S = 1.0  # new rows alone redraw a page at most this often (alerts: at once)
LANDING_CHECK_S = 5.0  # a first visit without ?run= waits at most this for alert counts
SAMPLES_SHOWN = 20
ALERT_ROWS_TALL = 30  # past this many alerts the table scrolls inside a fixed height
ALERT_TABLE_HEIGHT = 700  # px
HEALTH_COLUMNS = 3  # Health charts side by side; a fourth and fifth wrap to a second row
PLOTLY_CONFIG = {
    "displaylogo": False,
    # The toolbar's camera button exports PNG at 2× for slides and incident notes.
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
log = logging.getLogger("klwatch.app")


def _close_store(store: RunStore) -> None:
    store.close()  # stop its watchdog thread (and inotify instance) when the cache drops it


@st.cache_resource(show_spinner=False, on_release=_close_store)
def get_store(
    roots: tuple[str, ...], poll: bool, follow_symlinks: bool = False, preset: str | None = None
) -> RunStore:
    """One RunStore per server process (per root set): every viewer shares its reads."""
    return RunStore(
        roots,
        poll=poll,
        follow_external_symlinks=follow_symlinks,
        background_checks=True,
        preset=preset_from_spec(preset, "--preset") if preset else None,
    )


@st.cache_resource(show_spinner=False)
def get_figure_cache() -> RenderCache[charts.Figures]:
    """One per server process: a run's figures are built once per version and view, for
    every viewer (monitor/dashboard/render_cache.py)."""
    return RenderCache()


@st.cache_resource(show_spinner=False)
def live_charts_component() -> ComponentRenderer:
    """The live charts of the run and compare pages (static/live_charts.js), registered once."""
    code = live_api.component_code()
    # In the page's own DOM, not a shadow root: its text (the live status, an alert's news)
    # is page text like the rest; its classes (kw-*, uPlot's u-*) are its own.
    return st.components.v2.component(
        "klwatch.live_charts",
        html=code["html"],
        css=code["css"],
        js=code["js"],
        isolate_styles=False,
    )


def mount_live_charts(data: dict[str, object]) -> None:
    # Keyed: its DOM (and charts) live across reruns; it asks for one ("page") itself.
    live_charts_component()(key="live_charts", data=data, on_page_change=lambda: None)


def this_viewer() -> live_api.Viewer:
    return live_api.Viewer(session_id(), paused=bool(st.session_state.get("paused")))


def session_id() -> str:
    """This viewer's Streamlit session: the live endpoint's tokens belong to it."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def session_alive(session_id: str) -> bool:
    from streamlit import runtime

    return runtime.exists() and runtime.get_instance().is_active_session(session_id)


def read_secrets() -> dict[str, dict[str, object]]:
    try:
        return {key: dict(value) for key, value in st.secrets.items() if hasattr(value, "items")}
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        return {}  # no secrets.toml: no login (the default bind is 127.0.0.1)


def login_gate() -> None:
    """With [auth] in secrets.toml, nothing but a login button until the user is allowed."""
    policy = auth.login_policy(read_secrets())
    if not policy.required:
        return
    if policy.problem:
        st.error(policy.problem)
        st.stop()
    if not st.user.get("is_logged_in", False):  # absent (no identity cookie) = logged out
        live_api.revoke(session_id())  # its live charts lose their rows
        st.title("klwatch")
        st.write("This dashboard is shared with a team: log in to see its runs.")
        st.button("Log in", on_click=st.login, key="login")
        st.stop()
    email = st.user.get("email")
    if not auth.user_allowed(policy, email if isinstance(email, str) else None):
        live_api.revoke(session_id())
        st.error(f"{views.escape_markdown(email or 'This account')} may not view this dashboard.")
        st.button("Log out", on_click=st.logout, key="logout")
        st.stop()


def app_config() -> views.AppConfig:
    return views.parse_app_args(sys.argv[1:], os.environ, views.default_roots(APP_DIR))


# -- URL state -----------------------------------------------------------------------------


def load_url_state(store: RunStore, summaries: dict[str, RunSummary]) -> None:
    """Once per session: put the URL's view into the widgets' session state."""
    if st.session_state.get("_url_loaded"):
        return
    st.session_state["_url_loaded"] = True
    view = views.view_from_query(st.query_params.get_all)
    names = {rid: s.name for rid, s in summaries.items()}
    found, missing = views.resolve_runs(view.runs, list(summaries), names)
    st.session_state["missing_runs"] = missing
    if len(found) >= 2:
        st.session_state["compare"] = found
    if found:
        st.session_state["_chosen_run"] = found[0]
    elif not missing and summaries:
        # No run asked for: open the one that most needs attention (what you want at 3 a.m.).
        st.session_state["_chosen_run"] = views.landing_run(summaries.values())
    st.session_state["series"] = view.series
    st.session_state["metric"] = view.metric
    st.session_state["log_y"] = view.log_y
    st.session_state["smoothing"] = view.smoothing


def save_url_state(runs: list[str]) -> None:
    view = views.ViewState(
        runs=runs,
        series=list(st.session_state.get("series") or []),
        metric=st.session_state.get("metric") or "kl_mean",
        log_y=bool(st.session_state.get("log_y")),
        smoothing=float(st.session_state.get("smoothing") or 0.0),
    )
    params = views.view_to_query(view)
    current = {k: st.query_params.get_all(k) for k in st.query_params}
    wanted = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    if current != wanted:  # writing unchanged params would push browser history entries
        st.query_params.from_dict(params)


# Widget values that must survive every rerun. Streamlit drops the state of a widget that a
# run did not draw (the series picker on the compare page, the options on an empty run), so
# each value is mirrored under a plain key and restored before the widgets are created:
# going back to a run page finds its options, and the URL keeps them.
KEPT_WIDGETS = ("compare", "series", "metric", "log_y", "smoothing", "filter", "paused")


def keep_widget_state() -> None:
    for key in KEPT_WIDGETS:
        shadow = f"_kept_{key}"
        if key in st.session_state:
            st.session_state[shadow] = st.session_state[key]
        elif shadow in st.session_state:
            st.session_state[key] = st.session_state[shadow]


def _clear_missing() -> None:
    st.session_state["missing_runs"] = []


def _choose_run() -> None:
    """The sidebar radio's on_change: the one place a user's click changes the open run.

    The chosen run lives under its own key, not in the widget's value: during a slow rerun
    the browser can report the radio as empty (a radio cannot be unselected by a user, so
    an empty value is never a choice), and such a value must not lose the run or its URL.
    """
    value = st.session_state.get("run")
    if isinstance(value, str) and value:
        st.session_state["_chosen_run"] = value
    _clear_missing()


# -- sidebar -------------------------------------------------------------------------------


def sidebar(store: RunStore, summaries: dict[str, RunSummary], config: views.AppConfig) -> None:
    st.sidebar.title("klwatch")
    st.sidebar.caption("Roots: " + views.escape_markdown(", ".join(config.roots)))
    for note in views.root_warnings(store.root_problems, config)[1]:
        st.sidebar.caption(views.escape_markdown(note))
    if not summaries:
        st.sidebar.info(
            "No runs found yet. A run is a klwatch run directory, a TensorBoard log "
            "directory, a verl JSONL, a trackio database or a trainer_state.json."
        )
        return
    text = st.sidebar.text_input("Filter runs", key="filter", placeholder="name or path")
    names = {rid: s.name for rid, s in summaries.items()}
    matching = views.filter_runs(list(summaries), names, text)
    shown = views.limit_runs(matching, {rid: summaries[rid].last_write for rid in matching})
    if len(shown) < len(matching):
        st.sidebar.caption(
            f"Showing the {len(shown)} most recently written of {len(matching)} runs: "
            "type in the filter to find the others."
        )
    current = st.session_state.get("_chosen_run")
    if current in summaries and current not in shown:
        shown.append(current)  # keep the open run selectable while filtering
    now = time.time()
    st.sidebar.radio(
        f"Runs ({len(shown)} of {len(summaries)})",
        shown,
        index=None,
        key="run",
        # Labels must not change between reruns (Streamlit maps the chosen label back to
        # its option), so the live details (status, step, age, alerts) go in the captions.
        format_func=lambda rid: views.escape_markdown(views.run_title(summaries[rid])),
        captions=[views.run_caption(summaries[rid], now) for rid in shown],
        on_change=_choose_run,
    )
    compare_options = list(dict.fromkeys([*shown, *st.session_state.get("compare", [])]))
    st.sidebar.multiselect(
        "Compare runs",
        [rid for rid in compare_options if rid in summaries],
        key="compare",
        placeholder="pick two or more",
        on_change=_clear_missing,
    )


# -- run page ------------------------------------------------------------------------------


BANNER_LINES = 8  # per group; the Alerts tab has them all


def health_banner(view: RunView) -> None:
    """Green only when nothing fired and klwatch can see the run; else one box per group —
    Critical, Warning, what klwatch cannot see, Info, Cleared — each alert under its own
    severity, with the tally ("1 critical · 2 warnings · 1 cleared") above them."""
    verdict = views.run_health(view)
    if verdict.level == "healthy":
        st.success(views.escape_markdown(verdict.headline), icon=":material/check_circle:")
        return
    if verdict.tally:
        st.markdown("**Alerts:** " + views.escape_markdown(verdict.tally))
    for group in verdict.groups:
        show = {"critical": st.error, "warning": st.warning}.get(group.level, st.info)
        icon = {"critical": "error", "warning": "warning", "past": "history"}.get(
            group.level, "info"
        )
        lines = [views.escape_markdown(line) for line in group.lines[:BANNER_LINES]]
        if len(group.lines) > BANNER_LINES:
            lines.append(f"… and {len(group.lines) - BANNER_LINES} more \\(Alerts tab\\)")
        body = f"**{views.escape_markdown(group.heading)}**  \n" + "  \n".join(lines)
        show(body, icon=f":material/{icon}:")


def chart_options() -> charts.ChartOptions:
    left, right = st.columns([1, 3])
    left.toggle("Log y", key="log_y")
    right.slider("Smoothing (EMA weight)", 0.0, views.SMOOTHING_MAX, step=0.01, key="smoothing")
    smoothing = float(st.session_state.get("smoothing") or 0.0)
    return charts.ChartOptions(log_y=bool(st.session_state.get("log_y")), smoothing=smoothing)


def run_page(store: RunStore, run_id: str) -> bool:
    """Draw a run's page; True when its live charts follow the run themselves (no ticker)."""
    view = store.view(run_id)
    if view is None:
        st.error(f"Run {views.escape_markdown(run_id)} is no longer among the discovered runs.")
        return False
    data = view.data
    st.header(views.escape_markdown(view.name), anchor=False)
    st.caption(views.escape_markdown(views.run_header(view)))
    for line in views.source_lines(view):
        st.caption(views.escape_markdown(line))
    if view.slow:
        st.warning(
            "Reading this run is slow (a network disk?): showing what was read so far; "
            "the read goes on in the background."
        )
    health_banner(view)
    following = False
    if data.n_rows == 0 and view.skipped:
        st.info("No readable record: no charts. The Problems tab lists the skipped lines.")
    elif data.n_rows == 0:
        st.info("No records yet: the charts appear with the first step.")
    elif live_api.mounted():
        live_run_charts(store, view)
        following = True
    else:
        run_charts(view)
    run_tabs(view)
    return following


def picked_series(view: RunView) -> tuple[str, ...]:
    extras = charts.extra_series_names(view.data.names)
    # Keep URL-chosen series the run does not have out of the widget (it would reject them).
    st.session_state["series"] = [s for s in st.session_state.get("series", []) if s in extras]
    return tuple(st.session_state["series"])


def live_run_charts(store: RunStore, view: RunView) -> None:
    """The live path: canvas charts that take new rows from klwatch's endpoint, no rerun
    per row (monitor/dashboard/live_api.py; docs/dashboard.md, "The live path")."""
    options = chart_options()
    extras = charts.extra_series_names(view.data.names)
    extra = picked_series(view)
    if extras:
        st.multiselect("Other series", extras, key="series", placeholder="lengths, losses …")
    mount_live_charts(live_api.component_data(store, view, options, extra, this_viewer()))
    not_logged = views.health_not_logged(view.health)
    if not_logged:
        st.caption(views.escape_markdown(not_logged))


def run_charts(view: RunView) -> None:
    """The fallback path (no live endpoint): plotly figures redrawn by a Streamlit rerun."""
    options = chart_options()
    extras = charts.extra_series_names(view.data.names)
    extra = picked_series(view)
    health = view.health
    key = (
        view.run_id,
        view.pulse.version,
        tuple((a.rule, a.step, a.end_step) for a in view.alerts),
        options,
        extra,
        health.charts,
    )
    figures = get_figure_cache().get(
        key,
        lambda: charts.run_figures(
            view.data,
            view.meaning,
            view.alerts,
            options,
            extra=extra,
            thresholds=view.thresholds,
            health=health.charts,
        ),
    )
    # On log-y, what the axis cannot draw (values ≤ 0) is counted under its chart.
    notes = charts.run_log_notes(view.data, options, extra=extra, health=health.charts)
    show_chart(st.container(), figures, "kl", notes)
    left, right = st.columns(2)
    if "beta" in figures:
        show_chart(left, figures, "beta", notes)
    else:
        left.caption(views.escape_markdown(views.beta_missing(view.meaning)))
    show_chart(right, figures, "reward", notes)
    health_charts(figures, health, notes)
    if extras:
        st.multiselect("Other series", extras, key="series", placeholder="lengths, losses …")
        if "extra" in figures:
            show_chart(st.container(), figures, "extra", notes)


def show_chart(
    where: DeltaGenerator, figures: charts.Figures, name: str, notes: dict[str, str]
) -> None:
    where.plotly_chart(figures[name], key=f"chart_{name}", config=PLOTLY_CONFIG)
    if name in notes:
        where.caption(views.escape_markdown(notes[name]))


def health_charts(figures: charts.Figures, health: HealthRow, notes: dict[str, str]) -> None:
    """The Health row: a chart per health signal the run logs, then what it does not log."""
    st.subheader("Health", anchor=False)
    shown = health.charts
    for start in range(0, len(shown), HEALTH_COLUMNS):
        row = shown[start : start + HEALTH_COLUMNS]
        for column, chart in zip(st.columns(HEALTH_COLUMNS), row, strict=False):
            show_chart(column, figures, charts.health_figure_name(chart), notes)
    not_logged = views.health_not_logged(health)
    if not_logged:
        st.caption(views.escape_markdown(not_logged))


def run_tabs(view: RunView) -> None:
    alerts = view.alerts
    tally = views.tally_text(AlertTally.of(alerts))
    problems = view.problems
    tab_alerts, tab_samples, tab_config, tab_problems, tab_data = st.tabs(
        [
            f"Alerts ({tally})" if tally else "Alerts",
            "Samples",
            "Config",
            f"Problems ({view.skipped} lines skipped)" if problems else "Problems",
            "Data",
        ]
    )
    with tab_alerts:
        if alerts:
            # A static table: every message whole and wrapped (a grid cuts long text), an
            # open end as "active". Its cells are markdown, so each is escaped.
            frame = views.alerts_frame(alerts)
            table = views.markdown_frame(frame)
            if len(frame) <= ALERT_ROWS_TALL:
                st.table(table, hide_index=True)
            else:
                st.table(table, hide_index=True, height=ALERT_TABLE_HEIGHT)
        else:
            st.caption("No alerts so far.")
    with tab_samples:
        samples = view.samples(SAMPLES_SHOWN)
        if samples:
            st.dataframe(views.samples_frame(samples), hide_index=True)
        else:
            st.caption("No samples.jsonl in this run.")
    with tab_config:
        st.json(dict(view.info), expanded=2)
    with tab_problems:
        if problems:
            st.dataframe(views.problems_frame(problems), hide_index=True)
        else:
            st.caption("No problems: every line parsed.")
    with tab_data:
        csv_download(view)


def csv_download(view: RunView) -> None:
    data = view.data
    st.download_button(
        "Download metrics CSV",
        # A callable defers building the CSV (100 MB for 1M steps) until it is clicked.
        data=lambda: data.frame().to_csv(index=False).encode(),
        file_name=f"{view.path.name}-metrics.csv",
        mime="text/csv",
        on_click="ignore",
        key="csv",
    )
    st.caption(f"{data.n_rows:,} rows × {len(data.names) + 1} columns.")


# -- compare -------------------------------------------------------------------------------


def compare_page(store: RunStore, run_ids: list[str]) -> bool:
    """Draw the comparison; True when its live chart follows the runs itself (no ticker)."""
    st.header("Compare runs", anchor=False)
    loaded: list[RunView] = []
    for rid in run_ids:
        view = store.view(rid)
        if view is None:
            st.warning(f"Run {views.escape_markdown(rid)} is no longer discovered.")
            continue
        loaded.append(view)
    names = sorted({n for v in loaded for n in v.data.names if n != "time"})
    if not names:
        st.info("None of these runs has records yet.")
        return False
    if st.session_state.get("metric") not in names:
        st.session_state["metric"] = "kl_mean" if "kl_mean" in names else names[0]
    st.selectbox("Series", names, key="metric")
    options = chart_options()
    metric = st.session_state["metric"]
    if live_api.mounted():
        mount_live_charts(live_api.compare_data(store, loaded, metric, options, this_viewer()))
        st.dataframe(views.compare_frame(loaded), hide_index=True)
        return True
    series = [
        charts.CompareSeries(
            v.run_id, v.data.steps, v.data.column(metric), health=views.health_badge(v)
        )
        for v in loaded
    ]
    fig = charts.compare_figure(series, metric, options)
    st.plotly_chart(fig, key="chart_compare", config=PLOTLY_CONFIG)
    note = charts.compare_log_note(series, options)
    if note:
        st.caption(views.escape_markdown(note))
    st.dataframe(views.compare_frame(loaded), hide_index=True)
    return False


# -- live ----------------------------------------------------------------------------------


def render_keys(store: RunStore, run_ids: list[str]) -> dict[str, views.RenderKey]:
    return {rid: views.render_key(p) for rid in run_ids if (p := store.pulse(rid)) is not None}


def live_ticker(store: RunStore, run_ids: list[str]) -> None:
    """Every second: read what the trainer appended; redraw the page only if it changed.

    The ticker itself is tiny (a caption), so an idle or finished run costs nothing to
    watch; the charts are only re-sent when this viewer's copy is out of date. The version
    is compared per session (not just store.refresh's bool): with several viewers on one
    store, the first viewer's refresh would otherwise hide the change from the others.
    """
    paused = bool(st.session_state.get("paused"))
    # A finished run changes rarely (a resume, a new run beside it): check it less often, so
    # a room of viewers on finished runs costs the server little.
    pulses = [store.pulse(rid) for rid in run_ids]
    interval = LIVE_INTERVAL_S if views.any_running(pulses) else IDLE_INTERVAL_S

    @st.fragment(run_every=None if paused else interval)
    def ticker() -> None:
        for rid in run_ids:
            store.refresh(rid)  # cheap unless the watcher saw a write or a poll is due
        keys = render_keys(store, run_ids)
        # Other runs matter too: a run in the sidebar that starts failing or gets an alert.
        # Summaries are shared by every viewer and recomputed at most once a second.
        sidebar = (views.sidebar_key(store.summaries_cached()), store.root_problems)
        since = time.monotonic() - st.session_state.get("_rendered_at", 0.0)
        due = views.redraw_due(st.session_state.get("_rendered"), keys, since, DATA_REDRAW_S)
        if not st.session_state.get("_full_run") and (
            due or sidebar != st.session_state.get("_sidebar")
        ):
            st.rerun()  # the whole page: charts, banner, tables and sidebar
        st.caption(live_caption(store, run_ids, paused))

    ticker()


def live_caption(store: RunStore, run_ids: list[str], paused: bool) -> str:
    pulses = [p for rid in run_ids if (p := store.pulse(rid)) is not None]
    ages = [p.seconds_since_write for p in pulses if p.seconds_since_write is not None]
    updated = f"updated {views.format_age(min(ages))} ago" if ages else "no data yet"
    statuses = [p.status for p in pulses]
    return f"{views.live_state(paused, statuses)} · {views.escape_markdown(updated)}"


# -- page ----------------------------------------------------------------------------------


def selected_runs(summaries: dict[str, RunSummary]) -> list[str]:
    """The runs this view shows: a comparison (2+ picked), else the one open run."""
    compare = [r for r in st.session_state.get("compare", []) if r in summaries]
    run_id = st.session_state.get("_chosen_run")
    if len(compare) >= 2:
        return compare
    if run_id in summaries and not st.session_state.get("missing_runs"):
        return [run_id]
    return []


def show_error(what: str, e: Exception) -> None:
    """Never a traceback on the page: say what failed; the traceback goes to the log."""
    log.exception("rendering %s failed", what)
    st.error(
        f"Could not show {views.escape_markdown(what)}: "
        f"{views.escape_markdown(type(e).__name__)}: {views.escape_markdown(e)}"
    )


def page() -> None:
    login_gate()
    config = app_config()
    store = get_store(config.roots, config.poll, config.follow_symlinks, config.preset)
    # A first visit without ?run= opens the run that most needs attention: runs the
    # background checker has not reached yet are checked first (for a few seconds at most).
    landing = not st.session_state.get("_url_loaded") and not st.query_params.get_all("run")
    summaries = {s.run_id: s for s in store.summaries(check_s=LANDING_CHECK_S if landing else 0)}
    load_url_state(store, summaries)
    keep_widget_state()
    # Runs that vanished since the last rerun would make the widgets reject their state.
    st.session_state["compare"] = [r for r in st.session_state.get("compare", []) if r in summaries]
    if st.session_state.get("_chosen_run") not in summaries:
        st.session_state["_chosen_run"] = None
    # The radio always shows the chosen run, whatever value the browser last reported.
    st.session_state["run"] = st.session_state["_chosen_run"]
    shown = selected_runs(summaries)
    for rid in shown:  # load before the sidebar, so its alert counts are current
        store.refresh(rid)
        summaries[rid] = store.summary(rid) or summaries[rid]
    sidebar(store, summaries, config)

    for warning in views.root_warnings(store.root_problems, config)[0]:
        st.warning(views.escape_markdown(warning), icon=":material/folder_off:")
    for missing in st.session_state.get("missing_runs", []):
        st.error(
            f"No run named “{views.escape_markdown(missing)}” among the runs discovered under "
            "the configured roots. Pick a run in the sidebar."
        )
    if not summaries:
        st.info("No runs found under " + views.escape_markdown(", ".join(config.roots)))
    top_left, top_right = st.columns([3, 1])
    top_right.toggle("Pause live updates", key="paused")
    following = False  # the live charts poll for themselves (run and compare pages)
    try:
        if len(shown) >= 2:
            following = compare_page(store, shown)
        elif shown:
            following = run_page(store, shown[0])
    except Exception as e:  # the sidebar stays usable when one run cannot be drawn
        show_error(", ".join(shown), e)
    save_url_state(shown if shown else list(st.session_state.get("missing_runs", [])))
    st.session_state["_rendered"] = render_keys(store, shown)
    st.session_state["_rendered_at"] = time.monotonic()
    st.session_state["_sidebar"] = (views.sidebar_key(summaries.values()), store.root_problems)
    if following:
        return  # no ticker: the live charts ask for a rerun when the page must change
    with top_left:
        # Inside a full run the page is being drawn anyway: the ticker must not rerun it.
        st.session_state["_full_run"] = True
        try:
            live_ticker(store, shown)
        finally:
            st.session_state["_full_run"] = False


def main() -> None:
    # A local icon: a dashboard on an internal network makes no outside requests (a
    # material icon as favicon would be fetched from a font host).
    st.set_page_config(
        page_title="klwatch", page_icon=str(APP_DIR / "assets" / "icon.png"), layout="wide"
    )
    started = time.perf_counter()
    try:
        page()
    except Exception as e:
        show_error("the dashboard", e)
    record_timing(time.perf_counter() - started)


def record_timing(seconds: float) -> None:
    """With KLWATCH_TIMINGS=FILE, one JSON line per full page run: how long the server took
    to open (first run of a session), switch (another run chosen) or redraw a page. For
    benchmarks/bench_viewers.py and for operators asking where the time goes."""
    path = os.environ.get("KLWATCH_TIMINGS")
    if not path:
        return
    shown = st.session_state.get("_chosen_run")
    previous = st.session_state.get("_timed_run", "")
    kind = "open" if previous == "" else ("switch" if shown != previous else "redraw")
    st.session_state["_timed_run"] = shown
    line = json.dumps({"kind": kind, "run": shown, "seconds": round(seconds, 4)})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


if __name__ == "__main__":  # Streamlit runs this file as a script, once per page run
    main()
else:  # `streamlit run app.py` first imports it to find the server: klwatch's routes
    app = st.App(
        __file__, routes=live_api.routes(st.get_option("server.baseUrlPath"), session_alive)
    )
