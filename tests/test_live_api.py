"""The live endpoint (monitor/dashboard/live_api.py) and the live charts' layout (live_spec):
tokens, the JSON a page polls, what makes a page rerun, and the files the app serves itself.

The endpoint is exercised through Starlette's test client over a real RunStore reading real
runs written by RunWriter; the browser side is in tests/test_browser_live.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from monitor import RunWriter
from monitor.dashboard import charts, live_api, live_spec
from monitor.dashboard.store import RunStore
from tests.conftest import write_steps

ALIVE: set[str] = set()


@pytest.fixture(autouse=True)
def fake_sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Streamlit runtime in a unit test: sessions are alive while in ALIVE."""
    ALIVE.clear()
    # routes() sets the process's endpoint (mounted, base path, session check): AppTest
    # tests in this worker must keep seeing the fallback path.
    for name in ("_mounted", "_base", "session_alive"):
        monkeypatch.setattr(live_api, name, getattr(live_api, name))
    yield
    with live_api._lock:
        live_api._grants.clear()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunWriter(tmp_path / "root" / "a", config={"target_kl": 0.05}, name="a") as w:
        write_steps(w, 0, 200)
    s = RunStore([tmp_path / "root"], watch=False, poll_interval_s=0.0)
    yield s
    s.close()


def alive(session_id: str) -> bool:
    return session_id in ALIVE


@pytest.fixture
def client() -> TestClient:
    return TestClient(Starlette(routes=live_api.routes("", alive)))


def session(store: RunStore, sid: str = "s1") -> str:
    ALIVE.add(sid)
    return live_api.grant(store, sid)


def get(client: TestClient, token: str | None = None, **params: str) -> tuple[int, dict]:
    """A poll as the page makes it: the token in its header, never in the URL."""
    headers = {live_api.TOKEN_HEADER: token} if token is not None else {}
    r = client.get("/klwatch/live", params=params, headers=headers)
    return r.status_code, r.json()


def test_a_page_gets_rows_then_only_what_changed(client: TestClient, store: RunStore) -> None:
    token = session(store)
    code, body = get(client, token=token, run="root/a", series="kl_mean,kl_max,beta")
    assert code == 200, body
    assert body["loaded"] and body["live"] in (True, False) and body["status"]
    data = body["data"]
    assert data["x"][:3] == [0, 1, 2] and len(data["x"]) == 200
    assert set(data["series"]) == {"kl_mean", "kl_max", "beta"}
    # Nothing new: the answer carries no rows, only the version and the page key.
    code, again = get(client, token=token, run="root/a", series="kl_mean", have=body["version"])
    assert code == 200 and "data" not in again and again["page"] == body["page"]


def test_tokens_are_checked_and_die_with_their_session(
    client: TestClient, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, body = get(client, run="root/a")
    assert code == 400 and live_api.TOKEN_HEADER in body["error"]
    code, body = get(client, token="made-up", run="root/a")
    assert code == 401
    token = session(store, "s2")
    assert get(client, token=token, run="root/a")[0] == 200
    assert client.get("/klwatch/live", params={"run": "root/a", "token": token}).status_code == 400
    assert live_api.grant(store, "s2") == token  # one token per session and store
    ALIVE.discard("s2")  # its websocket dropped (a laptop asleep) …
    assert get(client, token=token, run="root/a")[0] == 401
    ALIVE.add("s2")  # … and reconnected: the same token works again
    assert get(client, token=token, run="root/a")[0] == 200
    token = session(store, "s3")
    live_api.revoke("s3")  # the login gate refused this session
    assert get(client, token=token, run="root/a")[0] == 401
    # Tokens of sessions gone longer than the grace period go when the next one is granted.
    for sid in ("s4", "s5", "s6"):
        session(store, sid)
    ALIVE.difference_update({"s2", "s4", "s5"})
    session(store, "s7")
    with live_api._lock:
        assert {"s4", "s5"} <= {g.session_id for g in live_api._grants.values()}  # in grace
    monkeypatch.setattr(live_api, "GRACE_S", 0.0)
    session(store, "s7")
    with live_api._lock:
        assert {g.session_id for g in live_api._grants.values()} == {"s6", "s7"}


def test_only_series_the_run_can_draw_are_built(client: TestClient, store: RunStore) -> None:
    token = session(store)
    code, body = get(client, token, run="root/a", series="kl_mean,made_up,reward_total")
    assert code == 200 and set(body["data"]["series"]) == {"kl_mean", "reward_total"}


def test_only_runs_under_the_dashboards_roots(client: TestClient, store: RunStore) -> None:
    token = session(store)
    for run in ("../a", "/etc/passwd", "b", "root/a/../../x"):
        code, body = get(client, token=token, run=run)
        assert code == 404 and "no run" in body["error"], run


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"smooth": "abc"}, "smooth"),
        ({"smooth": "1.5"}, "smooth"),
        ({"smooth": "nan"}, "smooth"),
        ({"series": ",".join(f"s{i}" for i in range(live_api.MAX_SERIES + 1))}, "series"),
    ],
)
def test_bad_parameters_are_named(
    client: TestClient, store: RunStore, params: dict[str, str], word: str
) -> None:
    code, body = get(client, token=session(store), run="root/a", **params)
    assert code == 400 and word in body["error"]


def test_base_url_path_prefixes_the_routes() -> None:
    paths = [getattr(r, "path", "") for r in live_api.routes("/team/klwatch/", alive)]
    assert paths == ["/team/klwatch/klwatch/live", "/team/klwatch/klwatch/static/{name}"]
    assert live_api.live_url() == "/team/klwatch/klwatch/live"
    assert live_api.mounted()


def test_the_chart_library_is_served_by_the_app(client: TestClient) -> None:
    r = client.get("/klwatch/static/uPlot.iife.min.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert b"uPlot" in r.content[:2000]
    for name in ("live_charts.js", "../live_api.py", "SHA256SUMS", "%2e%2e%2fapp.py"):
        assert client.get(f"/klwatch/static/{name}").status_code == 404, name


def test_vendored_uplot_is_the_pinned_release() -> None:
    folder = live_api.STATIC_DIR / "uplot"
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "uplot 1.6.32" in (folder / "VERSION").read_text()


def test_the_page_key_changes_with_an_alert_not_with_rows(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "r" / "live", name="live") as w:
        write_steps(w, 0, 100)
        store = RunStore([tmp_path / "r"], watch=False, poll_interval_s=0.0)
        try:
            store.refresh("r/live")
            key = live_api.page_key(store, ["r/live"])
            version = live_api.data_version(store, "r/live")
            write_steps(w, 100, 120)
            store.refresh("r/live")
            assert live_api.data_version(store, "r/live") != version  # new rows: new version
            assert live_api.page_key(store, ["r/live"]) == key  # … and no rerun
            for step in range(120, 125):
                w.log(step, kl_mean=math.nan, kl_max=math.nan, beta=0.1, reward_mean=0.5)
            store.refresh("r/live")
            assert live_api.page_key(store, ["r/live"]) != key  # an alert: the page reruns
            # A page drawn with the old key is told the run's active alerts at once.
            query = live_api.LiveQuery("t", "r/live", "", (), 0.0, page=key)
            told = orjson.loads(live_api.answer(store, query))
            assert {n["severity"] for n in told["news"]} == {"critical"}
            assert any(n["line"].startswith("kl_nonfinite since step 120") for n in told["news"])
            current = live_api.LiveQuery("t", "r/live", "", (), 0.0, page=told["page"])
            assert "news" not in orjson.loads(live_api.answer(store, current))
        finally:
            store.close()


def test_rows_keep_spikes_compute_what_is_not_logged_and_smooth_full_resolution(
    tmp_path: Path,
) -> None:
    n = 50_000
    with RunWriter(tmp_path / "r" / "big", name="big") as w:
        for step in range(n):
            kl = 5.0 if step == 31_337 else 0.05 + 0.01 * math.sin(step / 50)
            w.log(step, kl_mean=kl, reward_mean=1.0 - 0.5 * (step % 2))
    store = RunStore([tmp_path / "r"], watch=False)
    try:
        view = store.view("r/big")
        assert view is not None
        # A trainer that logs no β but states it in its config (TRL's `beta`, verl's kl_coef).
        view = dataclasses.replace(view, meaning=dataclasses.replace(view.meaning, beta=0.2))
        keys = ("kl_mean", "beta", "reward_total", "never_logged")
        body = orjson.loads(live_api.rows_payload(view, keys, smoothing=0.9, budget=1000))
        x = np.asarray(body["x"])
        assert len(x) <= 4 * 1000 and np.all(np.diff(x) > 0)
        kl = np.asarray(body["series"]["kl_mean"], dtype=float)
        assert kl.max() == 5.0 and x[int(kl.argmax())] == 31_337  # the one-step spike stays
        assert set(body["series"]["beta"]) == {0.2}  # β from the config, not logged
        total = np.asarray(body["series"]["reward_total"], dtype=float)
        expected = view.data.column("reward_mean") - 0.2 * view.data.column("kl_mean")
        assert np.allclose(total, expected[x.astype(int)])
        assert all(v is None for v in body["series"]["never_logged"])
        smooth = np.asarray(body["smooth"]["kl_mean"], dtype=float)
        full = charts.ema_smooth(view.data.column("kl_mean"), 0.9)
        assert np.allclose(smooth, full[x.astype(int)])  # EMA of every step, not of the picks
        assert body["rows"] == n and body["last_step"] == n - 1
        assert body["nonpositive"]["kl_mean"] == 0 and body["nonpositive"]["reward_total"] > 0
    finally:
        store.close()


def test_spec_draws_the_same_charts_as_the_plotly_path(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "r" / "h", config={"target_kl": 0.05}, name="h") as w:
        write_steps(w, 0, 120, entropy=1.0, grad_norm=1.0, response_len=40.0)
        for step in range(120, 126):
            w.log(step, kl_mean=math.nan, kl_max=math.nan, beta=0.1, reward_mean=0.5)
    store = RunStore([tmp_path / "r"], watch=False)
    try:
        view = store.view("r/h")
        assert view is not None and view.alerts
        options = charts.ChartOptions(log_y=True, smoothing=0.5)
        spec = live_spec.run_spec(view, options, extra=("response_len",))
        figures = charts.run_figures(
            view.data,
            view.meaning,
            view.alerts,
            options,
            extra=("response_len",),
            thresholds=view.thresholds,
            health=view.health.charts,
        )
        assert sorted(c["id"] for c in spec["charts"]) == sorted(figures)
        kl = spec["charts"][0]["panels"][0]
        band = charts.kl_band(view.thresholds)
        assert band is not None and kl["band"]["low"] == band.low and kl["band"]["target"] == 0.05
        assert {a["rule"] for a in kl["alerts"]} == {a.rule for a in view.alerts}
        assert [lane["rule"] for lane in kl["lanes"]] == charts.alert_lanes(view.alerts)
        reward = next(c for c in spec["charts"] if c["id"] == "reward")
        assert reward["panels"][0]["log"] is False  # rewards go negative: never log
        assert spec["series"][:2] == ["kl_mean", "kl_max"] and "response_len" in spec["series"]
        assert spec["smoothing"] == 0.5 and spec["beta_missing"] is None
    finally:
        store.close()
