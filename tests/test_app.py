"""The dashboard's page logic through Streamlit's AppTest (no browser): runs listed, run
chosen from the URL, alerts shown, bad input answered with a message, compare mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from monitor import RunWriter
from tests.conftest import write_steps

APP = Path(__file__).resolve().parents[1] / "app.py"
NAN = float("nan")


def open_app(**query: str | list[str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def qp(at: AppTest, key: str) -> list[str]:
    """A URL parameter as a list (AppTest keeps a lone value as a plain string)."""
    value = at.query_params.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def unescape(text: str) -> str:
    return text.replace("\\", "")


def alerts_table(at: AppTest) -> Any:
    """The Alerts tab's table (st.table: whole messages), its cells unescaped."""
    table = next(t for t in at.tabs if t.label.startswith("Alerts")).table[0].value
    return table.apply(lambda c: c.map(unescape) if c.dtype != "int64" else c)


def add_nan(run_dir: Path, step: int) -> None:
    writer = RunWriter(run_dir)
    writer.log(step, kl_mean=NAN, kl_max=NAN, beta=0.1, reward_mean=0.5)
    writer.close()


# -- listing and choosing ------------------------------------------------------------------


def test_runs_are_listed_with_status_and_last_step(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha", steps=120)
    make_run(root, "bravo", steps=80, status="failed")
    at = open_app()
    radio = at.sidebar.radio[0]
    assert [unescape(o) for o in radio.options] == ["runs/alpha", "runs/bravo"]
    details = [unescape(c) for c in radio.proto.captions]
    assert "finished" in details[0] and "step 119" in details[0] and "ago" in details[0]
    assert "failed" in details[1] and "step 79" in details[1]


def test_run_chosen_from_url(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha")
    make_run(root, "bravo")
    at = open_app(run="runs/bravo")
    assert at.sidebar.radio[0].value == "runs/bravo"
    assert unescape(at.header[0].value) == "bravo"
    assert qp(at, "run") == ["runs/bravo"]
    # A short name is looked up among discovered runs too.
    at = open_app(run="alpha")
    assert at.sidebar.radio[0].value == "runs/alpha"


def test_without_url_the_latest_run_opens_and_goes_into_the_url(
    root: Path, make_run: Callable
) -> None:
    import os

    old = make_run(root, "old")
    make_run(root, "new")
    os.utime(old / "metrics.jsonl", (1_000_000_000, 1_000_000_000))
    at = open_app()
    assert at.sidebar.radio[0].value == "runs/new"
    assert qp(at, "run") == ["runs/new"]


def test_text_filter_narrows_the_list(root: Path, make_run: Callable) -> None:
    for name in ("ppo-adaptive", "ppo-fixed", "grpo"):
        make_run(root, name, steps=20)
    at = open_app(run="grpo")
    at.sidebar.text_input(key="filter").input("ppo").run()
    options = [unescape(o) for o in at.sidebar.radio[0].options]
    # The open run stays selectable while filtering.
    assert sorted(options) == [
        "runs/grpo",
        "runs/ppo-adaptive",
        "runs/ppo-fixed",
    ]
    at.sidebar.text_input(key="filter").input("fixed").run()
    assert len(at.sidebar.radio[0].options) == 2


def test_picking_another_run_updates_the_page_and_url(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha")
    make_run(root, "bravo")
    at = open_app(run="runs/alpha")
    at.sidebar.radio[0].set_value("runs/bravo").run()
    assert unescape(at.header[0].value) == "bravo"
    assert qp(at, "run") == ["runs/bravo"]


# -- the run page --------------------------------------------------------------------------


def test_run_page_parts(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha", samples=True)
    at = open_app(run="runs/alpha")
    kinds = [el.type for el in at.main]  # top-level blocks exist, charts are inside them
    assert kinds
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # KL, β, reward
    kl_spec = json.loads(charts[0].proto.spec)
    names = [t.get("name") for t in kl_spec["data"]]
    assert "kl_mean" in names and "kl_max" in names
    assert at.toggle(key="log_y") is not None and at.slider(key="smoothing") is not None
    assert "Health" in [s.value for s in at.subheader]  # entropy has its Health chart
    tabs = [t.label for t in at.tabs]
    assert any(t.startswith("Alerts") for t in tabs) and "Config" in tabs
    assert len(at.get("download_button")) == 1
    config = json.loads(at.json[0].proto.body)
    assert config["name"] == "alpha" and config["kl"]["target"] == 0.05
    samples = at.dataframe[-1].value if at.dataframe else None
    assert samples is not None
    assert any("sat **bold**" in str(v) for v in samples.to_numpy().ravel())


def test_alerts_are_shown_in_banner_chart_and_table(root: Path, make_run: Callable) -> None:
    run_dir = make_run(root, "diverged", steps=200)
    add_nan(run_dir, 200)
    at = open_app(run="runs/diverged")
    banner = unescape(" ".join(texts(at.error)))
    assert "Critical" in banner and "kl_nonfinite" in banner
    table = alerts_table(at)
    assert "kl_nonfinite" in set(table["rule"])
    assert {"rule", "severity", "step", "end step", "message"} <= set(table.columns)
    assert list(table["end step"]) == ["active"]
    kl_spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    markers = [t for t in kl_spec["data"] if t.get("name") == "critical alerts"]
    assert markers and 200 in markers[0]["x"]


def test_healthy_run_says_healthy(root: Path, make_run: Callable) -> None:
    make_run(root, "calm", steps=150)
    at = open_app(run="runs/calm")
    assert any("Healthy" in unescape(t) for t in texts(at.success))
    assert not at.error


def test_new_records_show_on_the_next_run(root: Path, make_run: Callable) -> None:
    run_dir = make_run(root, "live", steps=50, status=None)
    at = open_app(run="runs/live")
    assert "50 steps" in unescape(at.caption[1].value) or any(
        "50 steps" in unescape(c) for c in texts(at.caption)
    )
    writer = RunWriter(run_dir)
    write_steps(writer, 50, 60)
    writer.close()
    at.run()
    assert any("60 steps" in unescape(c) for c in texts(at.caption))


def test_url_options_reach_the_widgets_and_back(root: Path) -> None:
    write_health_run(root, "alpha", response_len=120.0)
    at = open_app(run="runs/alpha", log="1", smooth="0.6", series="response_len")
    assert at.toggle(key="log_y").value is True
    assert at.slider(key="smoothing").value == pytest.approx(0.6)
    assert at.multiselect(key="series").value == ["response_len"]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert specs[0]["layout"]["yaxis"]["type"] == "log"
    assert len(specs) == 5  # KL, β, reward, the Health row's entropy, the extra series
    at.toggle(key="log_y").set_value(False).run()
    assert "log" not in at.query_params
    assert qp(at, "smooth") == ["0.6"]
    assert qp(at, "series") == ["response_len"]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope", "../../etc/passwd", "/etc", "runs/../../x"])
def test_unknown_run_in_url_gives_a_message_not_a_traceback(
    root: Path, make_run: Callable, name: str
) -> None:
    make_run(root, "alpha")
    at = open_app(run=name)
    message = unescape(" ".join(texts(at.error)))
    assert "No run named" in message and name in message
    assert not at.header  # no run page for a name we do not know
    assert qp(at, "run") == [name]  # the link still says what was asked


def test_unreadable_lines_are_listed_as_problems(root: Path, make_run: Callable) -> None:
    run_dir = make_run(root, "messy", steps=30)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('this is not json\n{"step": "x"}\n')
    (run_dir / "run.json").write_text("{broken")
    at = open_app(run="runs/messy")
    problems = next(t for t in at.tabs if t.label.startswith("Problems"))
    assert "2 lines skipped" in problems.label
    frame = problems.dataframe[0].value
    assert any("run.json" in str(f) for f in frame["file"])


def test_run_without_records_says_so(root: Path) -> None:
    run_dir = root / "empty"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("")
    at = open_app(run="runs/empty")
    assert any("No records yet" in t for t in texts(at.info))


def test_names_are_rendered_as_text(root: Path) -> None:
    evil = "**bold** [click](http://x) :red[x] <b>hi</b>"
    writer = RunWriter(root / "evil", config={}, name=evil)
    write_steps(writer, 0, 20)
    writer.close()
    at = open_app(run="runs/evil")
    header = at.header[0].value
    assert unescape(header) == unescape(evil)
    for token in ("*", "[", "]", "(", ":", "<"):
        assert f"\\{token}" in header  # every markdown-active character escaped


def test_no_runs_at_all(root: Path) -> None:
    at = open_app()
    assert any("No runs found" in t for t in texts(at.info))


# -- compare -------------------------------------------------------------------------------


def test_compare_from_url(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha", steps=100)
    make_run(root, "bravo", steps=150)
    at = open_app(run=["runs/alpha", "runs/bravo"])
    assert at.header[0].value == "Compare runs"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    # Neutral colours; each run's health in its legend name.
    assert [t["name"] for t in spec["data"]] == [
        "runs/alpha · no warnings",
        "runs/bravo · no warnings",
    ]
    assert at.selectbox(key="metric").value == "kl_mean"
    at.selectbox(key="metric").set_value("beta").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["title"]["text"].startswith("beta")
    assert qp(at, "run") == ["runs/alpha", "runs/bravo"]
    assert qp(at, "metric") == ["beta"]


def test_compare_from_sidebar(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha", steps=100)
    make_run(root, "bravo", steps=150)
    at = open_app(run="runs/alpha")
    at.sidebar.multiselect(key="compare").set_value(["runs/alpha", "runs/bravo"]).run()
    assert at.header[0].value == "Compare runs"
    table = at.dataframe[0].value
    assert list(table["run"]) == ["runs/alpha", "runs/bravo"]
    assert list(table["last step"]) == [99, 149]


def test_compare_with_one_unknown_run(root: Path, make_run: Callable) -> None:
    make_run(root, "alpha")
    make_run(root, "bravo")
    at = open_app(run=["runs/alpha", "ghost", "runs/bravo"])
    assert any("ghost" in unescape(t) for t in texts(at.error))


def test_sidebar_counts_the_open_runs_alerts_on_first_load(root: Path, make_run: Callable) -> None:
    run_dir = make_run(root, "diverged", steps=200)
    add_nan(run_dir, 200)
    at = open_app(run="runs/diverged")
    caption = unescape(at.sidebar.radio[0].proto.captions[0])
    assert "1 critical" in caption and "active critical" not in caption


def test_a_failing_chart_gives_a_message_not_a_traceback(
    root: Path, make_run: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor.dashboard.charts

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("bad <b>figure</b>")

    monkeypatch.setattr(monitor.dashboard.charts, "run_figures", broken)
    make_run(root, "alpha")
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["run"] = "runs/alpha"
    at.run()
    assert not at.exception
    message = unescape(" ".join(texts(at.error)))
    assert "Could not show runs/alpha" in message and "ValueError" in message
    assert at.sidebar.radio[0].value == "runs/alpha"  # the sidebar still works


def test_a_thousand_runs_list_the_recent_ones_and_filter_finds_the_rest(root: Path) -> None:
    import os

    from monitor.dashboard.views import SIDEBAR_LIMIT

    line = '{"step":0,"time":1.0,"kl_mean":0.02,"kl_max":0.1,"beta":0.1,"reward_mean":0.1}\n'
    for i in range(SIDEBAR_LIMIT + 50):
        run_dir = root / f"run-{i:04d}"
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text(line)
        os.utime(run_dir / "metrics.jsonl", (1_000_000 + i, 1_000_000 + i))
    at = open_app()
    options = list(at.sidebar.radio[0].options)
    assert len(options) == SIDEBAR_LIMIT
    assert unescape(options[0]).endswith("run-0050")  # the 50 oldest are left out
    assert any("type in the filter" in c.value for c in at.sidebar.caption)
    at.sidebar.text_input[0].input("run-0003").run()
    found = [unescape(o) for o in at.sidebar.radio[0].options]
    # the filter reaches a run outside the recent set; the open run stays selectable
    assert found == ["runs/run-0003", "runs/run-0149"]


# -- many viewers -----------------------------------------------------------------------------


def test_an_empty_or_stale_radio_value_never_loses_the_run(root: Path, make_run: Callable) -> None:
    """The race seen with 8 live viewers: during a slow rerun the browser reported the sidebar
    radio as empty, the page forgot its run and dropped ?run= (a reload lost it too)."""
    make_run(root, "alpha")
    make_run(root, "beta")
    at = open_app(run="runs/alpha")
    assert qp(at, "run") == ["runs/alpha"]
    at.radio(key="run").set_value(None).run()  # what the browser reported mid-race
    assert not at.exception
    assert any("alpha" in unescape(h.value) for h in at.header)
    assert qp(at, "run") == ["runs/alpha"]
    assert at.radio(key="run").value == "runs/alpha"
    at.radio(key="run").set_value("runs/beta").run()  # a real click still switches
    assert qp(at, "run") == ["runs/beta"]
    assert any("beta" in unescape(h.value) for h in at.header)


def test_figures_are_built_once_for_every_viewer(
    root: Path, make_run: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor.dashboard.charts

    built: list[int] = []
    real = monitor.dashboard.charts.run_figures

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor.dashboard.charts, "run_figures", counting)
    make_run(root, "shared", steps=500)
    first = open_app(run="runs/shared")
    assert len(built) == 1
    for _ in range(3):  # three more viewers of the same run and view
        open_app(run="runs/shared")
    assert len(built) == 1  # served from the one build
    open_app(run="runs/shared", log="1")  # another view option: one more build
    assert len(built) == 2
    specs = [json.loads(c.proto.spec) for c in first.get("plotly_chart")]
    assert specs and specs[0]["data"]


# -- the Health row ---------------------------------------------------------------------------


def write_health_run(root: Path, name: str, steps: int = 300, **series: float) -> Path:
    """A finished run whose records carry `series` (constant) beside the usual ones."""
    run_dir = root / name
    writer = RunWriter(run_dir, config={"target_kl": 0.05}, name=name)
    write_steps(writer, 0, steps, **series)
    writer.close("finished")
    return run_dir


def chart_titles(at: AppTest) -> list[str]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s["layout"].get("title", {}).get("text", "") for s in specs]


def test_health_row_charts_what_the_run_logs_and_names_what_it_does_not(root: Path) -> None:
    # entropy comes with every write_steps record
    write_health_run(root, "grpo", grad_norm=1.5, truncated_frac=0.02, my_metric=0.3)
    at = open_app(run="runs/grpo")
    assert "Health" in [s.value for s in at.subheader]
    titles = chart_titles(at)
    health = [t for t in titles if t.startswith(("Entropy", "Gradient norm", "Truncated"))]
    assert len(health) == 3
    assert not any(t.startswith(("Rollout mismatch", "Zero-spread")) for t in titles)
    captions = [unescape(c) for c in texts(at.caption)]
    assert "Not logged: rollout mismatch, zero-spread fraction" in captions
    # Series with a Health chart are not offered again among the other series.
    assert at.multiselect(key="series").options == ["my_metric"]
    assert not at.error and not at.warning


def test_health_alert_is_drawn_on_its_chart(root: Path) -> None:
    run_dir = root / "truncating"
    writer = RunWriter(run_dir, config={"target_kl": 0.05}, name="truncating")
    write_steps(writer, 0, 200, truncated_frac=0.02)
    write_steps(writer, 200, 300, truncated_frac=0.95)  # completions hit the length limit
    writer.close("finished")
    at = open_app(run="runs/truncating")
    table = alerts_table(at)
    assert "completions_truncated" in set(table["rule"])
    specs = {
        s["layout"]["title"]["text"]: s
        for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    }
    spec = next(s for title, s in specs.items() if title.startswith("Truncated"))
    markers = [t for t in spec["data"] if t.get("name") == "warning alerts"]
    assert markers and 200 <= markers[0]["x"][0] < 300
    assert any(s["type"] == "rect" and s["x0"] >= 200 for s in spec["layout"]["shapes"])
    entropy = next(s for title, s in specs.items() if title.startswith("Entropy"))
    assert not entropy["layout"].get("shapes")  # a truncation alert is not an entropy alert


def test_health_row_says_nothing_is_missing_when_all_are_logged(root: Path) -> None:
    write_health_run(
        root,
        "verl",
        grad_norm=1.0,
        truncated_frac=0.01,
        zero_std_frac=0.2,
        rollout_prob_diff=0.002,
        rollout_prob_diff_max=0.3,
        rollout_is_ratio=1.0,
    )
    at = open_app(run="runs/verl")
    titles = chart_titles(at)
    assert sum(t.startswith("Rollout mismatch") for t in titles) == 1
    assert sum(t.startswith("Zero-spread") for t in titles) == 1
    assert not any("Not logged" in unescape(c) for c in texts(at.caption))


# -- alerts read right, never green while blind (issue 23) -------------------------------------

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def copy_sample(root: Path, name: str, mtime: float | None = None) -> Path:
    """A sample run copied into the root (its files' times set to `mtime` if given)."""
    import os
    import shutil

    run_dir = shutil.copytree(SAMPLES / name, root / name)
    if mtime is not None:
        for f in run_dir.iterdir():
            os.utime(f, (mtime, mtime))
    return run_dir


def write_damaged_run(root: Path, name: str = "damaged") -> Path:
    """A run whose metrics.jsonl holds only damaged lines: text, binary garbage, no step."""
    run_dir = root / name
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_bytes(
        b"this is not json\n\x00\xff\xfe garbage \x80\n" + b'{"kl_mean": 0.1}\n'
    )
    return run_dir


def test_one_critical_and_two_warnings_read_as_such(root: Path, make_run: Callable) -> None:
    """sample_runs/no-penalty-hacking: no_kl_penalty, kl_high (warnings), kl_growth (critical).
    The landing page opens it (an active critical) though a healthy run was written later;
    no text calls the warnings critical."""
    copy_sample(root, "no-penalty-hacking", mtime=1_000_000_000)
    make_run(root, "calm", steps=50, status=None)  # live, newer, healthy
    at = open_app()
    assert unescape(at.header[0].value) == "no-penalty-hacking"
    assert qp(at, "run") == ["runs/no-penalty-hacking"]
    # The banner: a Critical group with kl_growth only, a Warning group with the two others.
    (critical,) = [unescape(t) for t in texts(at.error)]
    assert critical.startswith("**Critical (1 active)**") and "kl_growth since step" in critical
    assert "kl_high" not in critical and "no_kl_penalty" not in critical
    warning = next(unescape(t) for t in texts(at.warning) if "Warning" in t)
    assert warning.startswith("**Warning (2 active)**")
    assert "kl_high since step" in warning and "no_kl_penalty since step" in warning
    assert "kl_growth" not in warning
    tally = [unescape(m) for m in texts(at.markdown) if "Alerts:" in unescape(m)]
    assert tally == ["**Alerts:** 1 critical · 2 warnings"]
    # The run list counts each severity.
    radio = at.sidebar.radio[0]
    caption = unescape(
        radio.proto.captions[[unescape(o) for o in radio.options].index("runs/no-penalty-hacking")]
    )
    assert "1 critical · 2 warnings" in caption and "3 active critical" not in caption
    # The table: whole messages, "active" for an open end.
    table = alerts_table(at)
    assert set(table["end step"]) == {"active"}
    assert dict(zip(table["rule"], table["severity"], strict=True)) == {
        "kl_growth": "critical",
        "kl_high": "warning",
        "no_kl_penalty": "warning",
    }
    assert all(len(m) > 40 and not m.endswith("…") for m in table["message"])
    assert any(t.label == "Alerts (1 critical · 2 warnings)" for t in at.tabs)
    # The KL chart: a lane per rule, named with its own severity.
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    named = {s["name"] for s in spec["layout"]["shapes"] if s.get("name")}
    assert named == {"kl_growth (critical)", "kl_high (warning)", "no_kl_penalty (warning)"}


def test_landing_page_opens_a_warning_before_a_newer_healthy_run(
    root: Path, make_run: Callable
) -> None:
    copy_sample(root, "fixed-beta", mtime=1_000_000_000)  # an active kl_high warning
    make_run(root, "calm", steps=50)
    assert open_app().sidebar.radio[0].value == "runs/fixed-beta"


def test_a_run_with_only_damaged_lines_is_never_healthy(root: Path, make_run: Callable) -> None:
    write_damaged_run(root)
    make_run(root, "calm", steps=50)
    at = open_app(run="runs/damaged")
    assert not at.success, texts(at.success)  # no green box at all
    assert not any("Healthy" in unescape(t) for t in texts(at.warning) + texts(at.info))
    shown = unescape(" ".join(texts(at.warning)))
    assert "3 lines skipped" in shown or "records_unreadable" in shown
    header = next(unescape(c) for c in texts(at.caption) if "runs/damaged" in unescape(c))
    assert "0 steps" in header and "3 lines skipped" in header
    assert any("No readable record" in t for t in texts(at.info))
    radio = at.sidebar.radio[0]
    captions = dict(zip([unescape(o) for o in radio.options], radio.proto.captions, strict=True))
    assert "3 lines skipped" in unescape(captions["runs/damaged"])
    assert "▲" in captions["runs/damaged"]  # marked, never a quiet entry
    assert "lines skipped" not in unescape(captions["runs/calm"])
    problems = next(t for t in at.tabs if t.label.startswith("Problems"))
    assert "3 lines skipped" in problems.label


def test_a_missing_root_is_named_and_the_others_keep_serving(
    root: Path, make_run: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    missing = root.parent / "not-mounted"
    monkeypatch.setenv("KLWATCH_ROOTS", os.pathsep.join([str(root), str(missing)]))
    make_run(root, "alpha", steps=50)
    at = open_app()
    warnings = [unescape(t) for t in texts(at.warning)]
    assert any(str(missing) in w and "does not exist" in w for w in warnings), warnings
    assert [unescape(o) for o in at.sidebar.radio[0].options] == ["runs/alpha"]
    assert unescape(at.header[0].value) == "alpha"
    assert any("Healthy" in unescape(t) for t in texts(at.success))  # alpha itself is fine


def test_log_y_counts_the_values_it_cannot_draw(root: Path) -> None:
    run_dir = root / "k1"
    writer = RunWriter(run_dir, config={"target_kl": 0.05}, name="k1")
    write_steps(writer, 0, 100)
    write_steps(writer, 100, 112, kl_mean=-0.01)  # k1 goes negative
    writer.close("finished")
    at = open_app(run="runs/k1", log="1")
    captions = [unescape(c) for c in texts(at.caption)]
    assert "12 values ≤ 0 not drawn on the log scale" in captions
    at.toggle(key="log_y").set_value(False).run()
    assert not any("not drawn on the log scale" in unescape(c) for c in texts(at.caption))


def test_compare_marks_health_in_names_not_colours(root: Path, make_run: Callable) -> None:
    copy_sample(root, "no-penalty-hacking")
    make_run(root, "calm", steps=100)
    at = open_app(run=["runs/no-penalty-hacking", "runs/calm"], log="1")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t["name"] for t in spec["data"]]
    assert names == ["runs/no-penalty-hacking · critical", "runs/calm · no warnings"]
    colors = [t["line"]["color"] for t in spec["data"]]
    assert "#d62728" not in colors and "#2ca02c" not in colors  # D3's red and green
    table = at.dataframe[0].value
    assert list(table["health"]) == ["critical", "no warnings"]
    assert list(table["alerts"]) == ["1 critical · 2 warnings", ""]
