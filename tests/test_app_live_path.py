"""Which path the run page takes (AppTest, no browser): with klwatch's routes mounted, the
live charts component and no fragment ticker; without them (AppTest alone, app.py embedded
without st.App), the plotly fallback that tests/test_app.py covers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from monitor.dashboard import live_api

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture
def mounted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("_mounted", "_base", "session_alive"):
        monkeypatch.setattr(live_api, name, getattr(live_api, name))
    live_api.routes("/team", lambda session_id: True)
    yield
    with live_api._lock:
        live_api._grants.clear()


def run_page(run: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["run"] = run
    at.run()
    assert not at.exception, at.exception
    return at


def test_with_the_routes_the_run_page_mounts_the_live_charts(
    root: Path, make_run: Callable, mounted: None
) -> None:
    make_run(root, "alpha", steps=120)
    at = run_page("runs/alpha")
    assert not at.get("plotly_chart")  # the charts are the component's, not plotly's
    (component,) = at.get("bidi_component")
    proto = component.proto
    assert proto.component_name == "klwatch.live_charts"
    data = json.loads(proto.json)
    (source,) = data["sources"]
    assert source["run"] == "runs/alpha" and data["url"] == "/team/klwatch/live"
    assert [c["id"] for c in data["spec"]["charts"]][:3] == ["kl", "beta", "reward"]
    assert source["page_key"] and source["version"] and not data["paused"]
    assert "run=runs%2Falpha" in source["query"] and "token" not in source["query"]
    assert data["token"] and data["token_header"] == live_api.TOKEN_HEADER


def test_with_the_routes_the_compare_page_follows_every_run_live(
    root: Path, make_run: Callable, mounted: None
) -> None:
    make_run(root, "alpha", steps=120)
    make_run(root, "beta", steps=80)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["run"] = ["runs/alpha", "runs/beta"]
    at.run()
    assert not at.exception, at.exception
    assert not at.get("plotly_chart")
    (component,) = at.get("bidi_component")
    data = json.loads(component.proto.json)
    assert [s["run"] for s in data["sources"]] == ["runs/alpha", "runs/beta"]
    (chart,) = data["spec"]["charts"]
    series = chart["panels"][0]["series"]
    assert [(s["source"], s["key"]) for s in series] == [(0, "kl_mean"), (1, "kl_mean")]
    assert series[0]["label"].startswith("runs/alpha · ")  # its health, in its name
    assert at.dataframe  # the runs' health table stays


def test_without_the_routes_the_run_page_is_plotly_with_its_ticker(
    root: Path, make_run: Callable
) -> None:
    assert not live_api.mounted()
    make_run(root, "alpha", steps=120)
    at = run_page("runs/alpha")
    assert at.get("plotly_chart")
    assert not at.get("bidi_component")


def test_the_page_hands_the_component_a_token_for_its_session_only(
    root: Path, make_run: Callable, mounted: None
) -> None:
    make_run(root, "alpha", steps=120)
    run_page("runs/alpha")
    with live_api._lock:
        grants = list(live_api._grants.items())
    assert len(grants) == 1
    token, grant = grants[0]
    assert grant.session_id and grant.store.entry("runs/alpha") is not None
    assert live_api.live_url() == "/team/klwatch/live"
    assert parse_qs(f"token={token}")["token"] == [token]  # URL-safe as it is
