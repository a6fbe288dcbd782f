"""monitor.dashboard.views: the dashboard's logic without Streamlit (roots, URL, lookup, health)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from monitor.dashboard import views
from monitor.dashboard.run_view import AlertTally, RunSummary


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
    assert list(frame["end step"]) == ["active", "active", "active", "8"]  # never None
    assert views.alerts_frame([]).empty


def test_alerts_frame_keeps_whole_messages_and_the_table_shows_them_literally() -> None:
    long = "KL 0.31 is above the healthy band 0.01–0.1 for 250 steps: " + "raise β. " * 40
    frame = views.alerts_frame([A("kl_high", "warning", 3, message=long, value=float("nan"))])
    assert frame["message"][0] == long  # not cut
    assert frame["value"][0] == "nan"
    shown = views.markdown_frame(frame)
    assert shown["message"][0].replace("\\", "") == " ".join(long.split())
    assert "\\." in shown["message"][0]  # markdown-active characters escaped
    assert shown["step"][0] == 3  # numbers stay numbers


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
        badge: str = "orange"
        past_count: int | None = 3
        tally: AlertTally | None = field(
            default_factory=lambda: AlertTally(critical=1, warning=1, cleared=3)
        )
        skipped: int | None = 0

    details = views.run_details(S(), now=110.0)  # type: ignore[arg-type]
    assert details == "stalled · step 12,345 · 10 s ago · 1 critical · 1 warning · 3 cleared"
    caption = views.run_caption(S(), now=110.0)  # type: ignore[arg-type]
    assert caption.startswith(":orange[●] :orange-badge[TensorBoard]")
    assert caption.endswith(":red[▲]")
    assert views.run_title(S()) == "runs/a_b"  # type: ignore[arg-type]
    assert views.run_title(S(name="pretty")) == "runs/a_b (pretty)"  # type: ignore[arg-type]
    # Not yet tallied by severity: a count, never labelled with the worst severity.
    untallied = views.run_details(S(tally=None), now=110.0)  # type: ignore[arg-type]
    assert "2 active · 3 cleared" in untallied and "critical" not in untallied
    # Damaged lines are counted beside the rows; none readable: never a quiet entry.
    blind = S(last_step=None, rows=0, alert_count=0, tally=AlertTally(), skipped=3)
    details = views.run_details(blind, now=110.0)  # type: ignore[arg-type]
    assert details == "stalled · no steps · 10 s ago · 3 lines skipped · no readable record"
    assert views.run_caption(blind, now=110.0).endswith(":orange[▲]")  # type: ignore[arg-type]
    some = views.run_details(S(skipped=1), now=110.0)  # type: ignore[arg-type]
    assert some.endswith("3 cleared · 1 line skipped")


def test_the_sample_run_with_one_critical_and_two_warnings_reads_right() -> None:
    """The issue's run: no_kl_penalty and kl_high (warnings) and kl_growth (critical). No
    text calls the warnings critical."""
    alerts = [
        A("no_kl_penalty", "warning", 0, message="β is 0"),
        A("kl_high", "warning", 72, message="KL above the band"),
        A("kl_growth", "critical", 350, message="KL keeps growing"),
        A("kl_spike", "warning", 20, end_step=30, message="spike"),
    ]
    verdict = views.health(alerts)
    assert verdict.level == "critical"
    assert verdict.tally == "1 critical · 2 warnings · 1 cleared"
    assert verdict.headline == "Critical: kl_growth · Warning: kl_high, no_kl_penalty"
    titles = [g.title for g in verdict.groups]
    assert titles == ["Critical", "Warning", "Cleared"]
    critical, warning, cleared = verdict.groups
    assert critical.heading == "Critical (1 active)" and critical.level == "critical"
    assert critical.lines == ("kl_growth since step 350 — KL keeps growing",)
    assert warning.heading == "Warning (2 active)" and warning.level == "warning"
    assert [line.split()[0] for line in warning.lines] == ["kl_high", "no_kl_penalty"]
    assert cleared.lines == ("1 × kl_spike at step 20 — cleared",)
    assert views.tally_text(AlertTally.of(alerts)) == verdict.tally


def test_tally_text_counts_each_severity() -> None:
    assert views.tally_text(AlertTally()) == ""
    assert views.tally_text(AlertTally(warning=1)) == "1 warning"
    assert views.tally_text(AlertTally(2, 3, 1, 4)) == (
        "2 critical · 3 warnings · 1 info · 4 cleared"
    )


def test_a_blind_run_is_never_healthy() -> None:
    """No readable record (damaged lines only), an unreadable file, no alert engine: never
    the green "Healthy", with or without the records_unreadable alert."""
    blind = views.health([], rows=0, skipped=3)
    assert blind.level == "warning" and "Healthy" not in blind.headline
    assert blind.headline == "Warning: No readable record: 3 lines skipped (see the Problems tab)"
    assert [g.title for g in blind.groups] == ["Cannot see this run"]
    assert views.health([], rows=0, skipped=0).level == "healthy"  # empty: not yet written
    assert views.health([], rows=10, skipped=3).level == "healthy"  # some damage: Problems
    unreadable = views.health([], rows=5, read_error="metrics.jsonl: Permission denied")
    assert unreadable.level == "warning" and "Permission denied" in unreadable.headline
    # With the rule's own alert active, it says it once: under Warning.
    rule = A("records_unreadable", "warning", 0, metric="records_skipped", message="3 skipped")
    verdict = views.health([rule], rows=0, skipped=3)
    assert verdict.level == "warning" and [g.title for g in verdict.groups] == ["Warning"]
    # A read error is said whatever else is active.
    verdict = views.health([rule], rows=0, skipped=3, read_error="m: denied")
    assert [g.title for g in verdict.groups] == ["Warning", "Cannot see this run"]
    assert verdict.groups[1].lines == ("Cannot read this run: m: denied",)
    # An info note does not make a blind run look fine either.
    assert views.health([A("kl_low", "info")], rows=0, skipped=3).level == "warning"


def _summary(run_id: str, **kw: object) -> RunSummary:
    fields = {
        "name": run_id,
        "status": "finished",
        "last_step": 10,
        "last_write": 100.0,
        "rows": 11,
        "alert_count": 0,
        "worst_severity": None,
        "tally": AlertTally(),
        "skipped": 0,
    }
    fields.update(kw)
    return RunSummary(run_id=run_id, **fields)  # type: ignore[arg-type]


def test_landing_run_is_the_one_that_most_needs_attention() -> None:
    newest_live = _summary("live", status="running", last_write=900.0)
    older_live = _summary("live-old", status="running", last_write=800.0)
    newest_done = _summary("done", last_write=1000.0)
    warning = _summary("warn", last_write=10.0, alert_count=1, tally=AlertTally(warning=1))
    critical = _summary(
        "crit", last_write=5.0, alert_count=3, tally=AlertTally(critical=1, warning=2)
    )
    cleared = _summary("cleared", last_write=2000.0, tally=AlertTally(cleared=5))
    info = _summary("info", last_write=3000.0, alert_count=1, tally=AlertTally(info=1))
    blind = _summary("blind", last_write=1.0, rows=0, skipped=3)
    everyone = [newest_done, older_live, newest_live, warning, critical, cleared, info, blind]
    assert views.landing_run(everyone) == "crit"  # an active critical alert first
    assert views.landing_run([r for r in everyone if r is not critical]) in ("warn", "blind")
    assert views.landing_run([newest_done, newest_live, older_live, warning]) == "warn"
    assert views.landing_run([newest_done, blind]) == "blind"  # cannot see it: attention
    # Nothing active: the most recently written live run, not the newest finished one.
    assert views.landing_run([newest_done, older_live, newest_live, cleared, info]) == "live"
    assert views.landing_run([newest_done, cleared]) == "cleared"  # none live: the newest
    # Of two critical runs, the live one; of two live ones, the latest written.
    live_critical = replace(critical, run_id="crit-live", status="running")
    assert views.landing_run([critical, live_critical]) == "crit-live"
    # Summaries not tallied yet (light, before the first check) still rank by severity.
    light = _summary("light", tally=None, alert_count=2, worst_severity="critical")
    assert views.landing_run([newest_live, light]) == "light"
    assert views.landing_run([]) is None


def test_root_warnings_name_given_roots_and_only_note_missing_defaults() -> None:
    problems = ["/mnt/share does not exist"]
    given = views.AppConfig(("/mnt/share",))
    warnings, notes = views.root_warnings(problems, given)
    assert warnings == [
        "Root /mnt/share does not exist: no runs from it are shown (the other roots are)."
    ]
    assert notes == []
    defaults = views.parse_app_args([], {}, DEFAULTS)
    assert not defaults.roots_given
    assert views.root_warnings(problems, defaults) == (
        [],
        ["Default root /mnt/share does not exist: nothing to show from it yet."],
    )
    assert views.parse_app_args([], {"KLWATCH_ROOTS": "/x"}, DEFAULTS).roots_given


def test_live_state_says_not_running_for_finished_runs() -> None:
    from monitor.dashboard.views import live_state

    assert live_state(True, ["running"]).endswith("paused")
    assert live_state(False, ["running"]).endswith("live")
    assert live_state(False, ["finished", "stalled"]).endswith("live")
    assert live_state(False, ["finished", "failed"]).endswith("not running")
    assert live_state(False, []).endswith("live")  # nothing loaded yet: still watching


def test_any_running_decides_the_live_interval(tmp_path: Path) -> None:
    from monitor import RunWriter
    from monitor.dashboard.run_view import RunPulse
    from monitor.dashboard.store import RunStore
    from monitor.dashboard.views import any_running

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
    from monitor.dashboard.run_view import health_row

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
