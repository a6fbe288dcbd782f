"""Team-deployment security of the dashboard: login gate, containment, no writes, no HTML."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

from monitor.dashboard.auth import LoginPolicy, login_policy, user_allowed

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "s" * 32,
    "client_id": "id",
    "client_secret": "secret",
    "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
}


def run_app(secrets: dict | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for section, values in (secrets or {}).items():
        at.secrets[section] = values
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_login_gate_shows_only_a_login_button(root: Path, make_run: Callable) -> None:
    make_run(root, "secret-run")
    at = run_app({"auth": AUTH}, run="runs/secret-run")
    assert [b.label for b in at.button] == ["Log in"]
    page_text = " ".join(str(e.value) for e in [*at.markdown, *at.header, *at.caption])
    assert "secret-run" not in page_text
    assert not at.sidebar.radio  # no run list before login


def test_half_configured_auth_keeps_the_dashboard_closed(root: Path, make_run: Callable) -> None:
    make_run(root, "secret-run")
    at = run_app({"auth": {"client_id": "x"}})
    assert "lacks redirect_uri, cookie_secret" in at.error[0].value
    assert not at.sidebar.radio


def test_without_auth_there_is_no_login(root: Path, make_run: Callable) -> None:
    make_run(root, "open-run")
    at = run_app(run="runs/open-run")
    assert "Log in" not in [b.label for b in at.button]
    assert at.header and "open" in at.header[0].value


def test_login_policy_and_allow_lists() -> None:
    assert login_policy({}) == LoginPolicy()
    policy = login_policy(
        {"auth": AUTH, "klwatch": {"allowed_domains": ["Example.org"], "allowed_emails": "a@b.c"}}
    )
    assert policy.required and policy.problem is None
    assert user_allowed(policy, "Alice@example.org")
    assert user_allowed(policy, "a@b.c")
    assert not user_allowed(policy, "mallory@example.org.evil.com")
    assert not user_allowed(policy, "mallory@evil.com")
    assert not user_allowed(policy, None)
    assert user_allowed(login_policy({"auth": AUTH}), "anyone@anywhere.io")


def test_symlink_out_of_the_root_cannot_be_opened_from_the_url(
    root: Path, tmp_path: Path, make_run: Callable
) -> None:
    make_run(root, "inside")
    outside = make_run(tmp_path / "private", "payroll")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    at = run_app(run="runs/escape")
    assert any("No run named" in str(e.value) for e in at.error)
    assert not at.header
    radio = at.sidebar.radio[0]
    assert list(radio.options) and all("escape" not in o for o in radio.options)


def test_the_app_never_writes_into_run_directories(root: Path, make_run: Callable) -> None:
    make_run(root, "a")
    make_run(root, "b", status=None)

    def listing() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))
        }

    before = listing()
    at = run_app(run="runs/a")
    at.query_params["run"] = ["runs/a", "runs/b"]
    at.run()
    assert listing() == before


def test_no_raw_html_anywhere_in_the_ui_code() -> None:
    for path in [APP, *sorted((REPO / "monitor").glob("*.py"))]:
        source = path.read_text()
        assert "unsafe_allow_html" not in source, path
        assert not re.search(r"st\.html\(|components\.html\(", source), path


def test_default_bind_is_localhost() -> None:
    config = (REPO / ".streamlit" / "config.toml").read_text()
    assert re.search(r'^address = "127\.0\.0\.1"$', config, re.M)
    assert re.search(r"^headless = true$", config, re.M)
    assert re.search(r"^gatherUsageStats = false$", config, re.M)
    assert os.path.exists(REPO / ".gitignore")
    assert ".streamlit/secrets.toml" in (REPO / ".gitignore").read_text()
