"""monitor.views: the dashboard's logic without Streamlit (roots, URL, lookup, health)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor import views


@dataclass
class A:
    rule: str
    severity: str
    step: int = 0
    end_step: int | None = None
    metric: str = "kl_mean"
    value: float = 1.0
    message: str = "msg"


DEFAULTS = ("/app/sample_runs", "/app/runs")


def test_roots_default_then_replaced_by_flags_and_env(tmp_path: os.PathLike[str]) -> None:
    assert views.parse_app_args([], {}, DEFAULTS).roots == DEFAULTS
    config = views.parse_app_args(["--root", "/a", "--root", "/b", "--poll"], {}, DEFAULTS)
    assert config.roots == ("/a", "/b") and config.poll
    env = {"KLWATCH_ROOTS": os.pathsep.join(["/c", "", "/a"])}
    config = views.parse_app_args(["--root", "/a"], env, DEFAULTS)
    assert config.roots == ("/a", "/c")  # de-duplicated, order kept
    assert not config.poll
    # Streamlit's own arguments or typos do not crash the app.
    assert views.parse_app_args(["--unknown", "x"], {}, DEFAULTS).roots == DEFAULTS


def test_url_round_trip() -> None:
    view = views.ViewState(["r/a", "r/b"], ["entropy"], "kl_max", True, 0.6)
    params = views.view_to_query(view)
    assert params == {
        "run": ["r/a", "r/b"],
        "series": ["entropy"],
        "metric": "kl_max",
        "log": "1",
        "smooth": "0.6",
    }

    def get_all(key: str) -> list[str]:
        value = params.get(key, [])
        return [value] if isinstance(value, str) else list(value)

    assert views.view_from_query(get_all) == view


@pytest.mark.parametrize(
    ("raw", "expected"), [("0.5", 0.5), ("7", 0.99), ("-1", 0.0), ("nan", 0.0), ("x", 0.0)]
)
def test_bad_smoothing_values_are_clamped(raw: str, expected: float) -> None:
    view = views.view_from_query(lambda k: [raw] if k == "smooth" else [])
    assert view.smoothing == expected


def test_defaults_stay_out_of_the_url() -> None:
    assert views.view_to_query(views.ViewState(["r/a"])) == {"run": ["r/a"]}


def test_resolve_runs_only_matches_discovered_runs() -> None:
    ids = ["runs/alpha", "runs/bravo", "sample_runs/alpha"]
    found, missing = views.resolve_runs(
        ["runs/bravo", "../../etc/passwd", "/etc", "alpha", "bravo", "ghost"],
        ids,
        {"runs/bravo": "the bravo run"},
    )
    # "alpha" is ambiguous (two roots): not guessed. "bravo" aliases an already found run.
    assert found == ["runs/bravo"]
    assert missing == ["../../etc/passwd", "/etc", "alpha", "ghost"]
    assert views.resolve_runs(["the bravo run"], ids, {"runs/bravo": "the bravo run"}) == (
        ["runs/bravo"],
        [],
    )


def test_filter_runs_matches_all_words_in_id_or_name() -> None:
    ids = ["r/ppo-adaptive", "r/ppo-fixed", "r/grpo"]
    names = {"r/grpo": "GRPO baseline"}
    assert views.filter_runs(ids, names, "") == ids
    assert views.filter_runs(ids, names, "PPO fix") == ["r/ppo-fixed"]
    assert views.filter_runs(ids, names, "baseline") == ["r/grpo"]


def test_health_levels() -> None:
    assert views.health([]).level == "healthy"
    notes = views.health([A("kl_low", "info")])
    assert notes.level == "past" and "Healthy" not in notes.headline  # something fired
    warning = views.health([A("kl_high", "warning"), A("kl_spike", "critical", end_step=5)])
    assert warning.level == "warning" and "kl_high" in warning.headline
    assert "kl_spike" not in warning.headline  # cleared alerts do not count
    critical = views.health([A("kl_high", "warning"), A("kl_nonfinite", "critical", 9)])
    assert critical.level == "critical"
    assert critical.headline.index("kl_nonfinite") < critical.headline.index("kl_high")
    assert "No alert engine" in views.health([], engine_ready=False).headline


def test_health_tells_the_whole_history_in_words() -> None:
    spikes = [A("kl_spike", "warning", s, end_step=s + 10) for s in (412, 977, 1603, 2290)]
    verdict = views.health([*spikes, A("kl_low", "info", 3, end_step=160)])
    assert verdict.level == "past" and "Healthy" not in verdict.headline
    assert verdict.details == [
        "1 × kl_low at step 3 — cleared",
        "4 × kl_spike at steps 412, 977, 1603, 2290 — cleared",
    ]
    active = views.health([A("kl_high", "warning", 700), *spikes])
    assert active.level == "warning"
    assert active.details[0].startswith("Active: kl_high since step 700")
    assert active.details[1].startswith("4 × kl_spike")


def test_alerts_frame_sorts_active_and_severe_first() -> None:
    frame = views.alerts_frame(
        [
            A("kl_low", "info", 1),
            A("kl_spike", "critical", 5, end_step=8),
            A("kl_high", "warning", 3),
            A("kl_nonfinite", "critical", 7),
        ]
    )
    assert list(frame["rule"]) == ["kl_nonfinite", "kl_high", "kl_low", "kl_spike"]
    assert list(frame.columns) == views.ALERT_COLUMNS
    assert frame["end_step"].isna().sum() == 3
    assert views.alerts_frame([]).empty


def test_escape_markdown_neutralises_markup() -> None:
    raw = "**b** _i_ [l](http://x) :red[c] <b>h</b> `c` # h\nnext"
    escaped = views.escape_markdown(raw)
    assert "\n" not in escaped
    for token in ("**", "_i_", "[l]", ":red[", "<b>", "`c`"):
        assert token not in escaped
    assert escaped.replace("\\", "") == raw.replace("\n", " ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "never"), (3.2, "3 s"), (600, "10 min"), (7200, "2.0 h"), (3 * 86400, "3.0 d")],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert views.format_age(seconds) == text


def test_run_details_and_caption() -> None:
    @dataclass
    class S:
        run_id: str = "runs/a_b"
        name: str = "a_b"
        status: str = "stalled"
        last_step: int | None = 12345
        last_write: float | None = 100.0
        rows: int | None = 10
        alert_count: int | None = 2
        worst_severity: str | None = "critical"
        problem: str | None = None
        source: str = "TensorBoard"
        past_count: int | None = 3

    details = views.run_details(S(), now=110.0)
    assert details == "stalled · step 12,345 · 10 s ago · 2 active critical · 3 cleared"
    caption = views.run_caption(S(), now=110.0)
    assert caption.startswith(":orange[●] :orange-badge[TensorBoard]")
    assert caption.endswith(":red[▲]")
    assert views.run_title(S()) == "runs/a_b"
    assert views.run_title(S(name="pretty")) == "runs/a_b (pretty)"


def test_live_state_says_not_running_for_finished_runs() -> None:
    from monitor.views import live_state

    assert live_state(True, ["running"]).endswith("paused")
    assert live_state(False, ["running"]).endswith("live")
    assert live_state(False, ["finished", "stalled"]).endswith("live")
    assert live_state(False, ["finished", "failed"]).endswith("not running")
    assert live_state(False, []).endswith("live")  # nothing loaded yet: still watching


def test_any_running_decides_the_live_interval(tmp_path: Path) -> None:
    from monitor import RunWriter
    from monitor.run_view import RunPulse
    from monitor.store import RunStore
    from monitor.views import any_running

    done = RunWriter(tmp_path / "done")
    done.log(0, kl_mean=0.02, kl_max=0.1, beta=0.1, reward_mean=0.1)
    done.close()
    live = RunWriter(tmp_path / "live")
    live.log(0, kl_mean=0.02, kl_max=0.1, beta=0.1, reward_mean=0.1)
    store = RunStore([tmp_path], watch=False)
    try:
        done_id, live_id = f"{tmp_path.name}/done", f"{tmp_path.name}/live"

        def pulses(*run_ids: str) -> list[RunPulse | None]:
            return [store.pulse(rid) for rid in run_ids]

        assert pulses(done_id) == [None]
        assert any_running(pulses(done_id))  # not loaded yet: keep watching closely
        store.view(done_id)
        store.view(live_id)
        assert not any_running(pulses(done_id))
        assert any_running(pulses(done_id, live_id))
        assert any_running([])  # nothing shown: keep looking for runs
    finally:
        live.close()
        store.close()


def test_health_row_says_which_health_series_a_run_logs_and_lacks() -> None:
    from monitor.run_view import health_row

    names = ["kl_mean", "entropy", "grad_norm", "truncated_frac", "rollout_is_ratio_max", "lr"]
    row = health_row(names)
    assert row.found == ("entropy", "grad_norm", "truncated_frac", "rollout_is_ratio_max")
    assert [(c.name, c.series) for c in row.charts] == [
        ("entropy", ("entropy",)),
        ("grad_norm", ("grad_norm",)),
        ("truncated_frac", ("truncated_frac",)),
        ("rollout_mismatch", ("rollout_is_ratio_max",)),  # only what the run logs
    ]
    assert [c.short for c in row.missing] == ["zero_std_frac"]
    assert views.health_not_logged(row) == "Not logged: zero-spread fraction"

    row = health_row(["entropy", "grad_norm", "truncated_frac"])
    assert views.health_not_logged(row) == "Not logged: rollout mismatch, zero-spread fraction"
    assert [c.short for c in row.missing] == ["rollout mismatch", "zero_std_frac"]
    everything = health_row([*names, "zero_std_frac"])
    assert everything.missing == () and views.health_not_logged(everything) is None
    assert health_row(["kl_mean"]).charts == ()
