"""monitor.dashboard.charts: figures from series, pure (no Streamlit), downsampled, alerts
marked."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from monitor.alerts import Alert, Thresholds, resolve_thresholds
from monitor.alerts.config import AlertConfig
from monitor.dashboard.charts import (
    ChartOptions,
    CompareSeries,
    beta_figure,
    compare_figure,
    ema_smooth,
    extra_series_names,
    health_figure,
    health_figure_name,
    kl_band,
    kl_figure,
    reward_figure,
    reward_total,
    run_figures,
    series_figure,
)
from monitor.dashboard.downsample import DEFAULT_BUDGET
from monitor.dashboard.run_view import health_row
from monitor.presets import KLMeaning
from monitor.table import SeriesData

TARGETED = {"kl": {"target": 0.05, "units": "per_token"}}  # what _run's run.json says
NO_PRESET = KLMeaning("", "unknown trainer")


def lanes(fig: go.Figure) -> list[Any]:
    """An alert chart's rule lanes: one named shape per alert span (its rule's colour, in
    its rule's lane at the top; the faint full-height shading behind it has no name)."""
    return [s for s in fig.layout.shapes if s.name]


def _series(columns: dict[str, np.ndarray]) -> SeriesData:
    n = next(iter(columns.values())).size
    return SeriesData.of(np.arange(n, dtype=np.int64), columns)


def _run(n: int = 1000, **extra: np.ndarray) -> SeriesData:
    rng = np.random.default_rng(0)
    kl = 0.05 + 0.005 * rng.normal(size=n)
    columns = {
        "time": np.arange(n, dtype=float),
        "kl_mean": kl,
        "kl_max": kl * 3,
        "beta": np.full(n, 0.1),
        "reward_mean": np.linspace(0, 1, n),
        **extra,
    }
    return _series(columns)


def _thresholds(info: dict[str, Any], meaning: KLMeaning | None = None) -> Thresholds:
    return resolve_thresholds(AlertConfig(), info, meaning)


def _trace_names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data]


# -- smoothing -----------------------------------------------------------------------------


def _tensorboard_ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's reference loop, transcribed."""
    last, count, out = 0.0, 0, []
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        last = last * weight + (1 - weight) * v
        count += 1
        out.append(last / (1 - weight**count))
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_ema_matches_tensorboard_debiased_ema(weight: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=300)
    values[[5, 50, 51, 200]] = [np.nan, np.inf, np.nan, -np.inf]
    expected = np.array(_tensorboard_ema(values.tolist(), weight)) if weight else values.copy()
    got = ema_smooth(values, weight)
    if weight == 0:
        np.testing.assert_array_equal(got, values)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)


def test_ema_is_debiased_from_the_first_point() -> None:
    # No pull towards zero at the start (the bias TensorBoard's debiasing removes).
    assert ema_smooth(np.array([5.0, 5.0, 5.0]), 0.9).tolist() == pytest.approx([5, 5, 5])


def test_ema_rejects_weight_one() -> None:
    with pytest.raises(ValueError):
        ema_smooth(np.ones(3), 1.0)


# -- band, reward --------------------------------------------------------------------------


def test_band_is_target_relative_when_run_json_has_a_target() -> None:
    band = kl_band(_thresholds({"kl": {"target": 0.02, "units": "per_token"}}))
    assert band is not None and band.target == 0.02
    assert band.low == pytest.approx(0.005) and band.high == pytest.approx(0.04)


def test_band_defaults_to_the_seeds_range_per_token() -> None:
    band = kl_band(_thresholds({}))
    assert band is not None and (band.low, band.high) == (0.01, 0.1) and band.target is None


def test_band_is_the_alert_engines_band() -> None:
    # One place for thresholds: a rules file's band is the chart's band too.
    config = replace(AlertConfig(), band=replace(AlertConfig().band, low=0.2, high=0.4))
    band = kl_band(resolve_thresholds(config, {}))
    assert band is not None and (band.low, band.high) == (0.2, 0.4)


def test_no_band_without_thresholds_or_where_none_fits_the_plotted_kl() -> None:
    assert kl_band(None) is None  # the engine has not seen rows yet
    # per-sequence KL the engine divides by the response length: the chart shows the sum
    scaled = _thresholds({"kl": {"units": "per_sequence"}})
    assert scaled.per_token_scaled and kl_band(scaled) is None
    # per-sequence KL and no length logged: the rules turned the band off
    meaning = KLMeaning("verl", "verl", {"kl_mean": "actor/kl_loss"}, units="per_sequence")
    off = _thresholds({}, meaning)
    assert off.band_off and kl_band(off) is None


def test_reward_total_is_score_minus_beta_kl() -> None:
    got = reward_total(np.array([1.0, 2.0]), np.array([0.1, 0.5]), np.array([2.0, 1.0]))
    np.testing.assert_allclose(got, [0.8, 1.5])


# -- figures -------------------------------------------------------------------------------


def test_kl_figure_has_both_series_band_target_and_alert_markers() -> None:
    run = _run()
    alerts = [
        Alert("kl_spike", "critical", 500, None, "kl_max", 9.0, "KL max jumped 10x"),
        Alert("kl_nan", "critical", 600, None, "kl_mean", math.nan, "KL is NaN"),
        Alert("kl_low", "warning", 100, 200, "kl_mean", 0.001, "KL below band"),
    ]
    fig = kl_figure(
        run.steps,
        run.column("kl_mean"),
        run.column("kl_max"),
        band=kl_band(_thresholds(TARGETED)),
        alerts=alerts,
    )
    names = _trace_names(fig)
    assert "kl_mean" in names and "kl_max" in names
    assert "critical alerts" in names and "warning alerts" in names
    critical = next(t for t in fig.data if t.name == "critical alerts")
    assert list(critical.x) == [500, 600]
    assert all(math.isfinite(y) for y in critical.y)  # the NaN alert still gets a place
    assert any("KL max jumped" in text for text in critical.text)
    shapes = fig.layout.shapes
    assert any(s.type == "rect" and s.y0 == pytest.approx(0.0125) for s in shapes)  # band
    assert any(s.type == "line" and s.y0 == pytest.approx(0.05) for s in shapes)  # target
    assert any(s.type == "rect" and s.x0 == 100 and s.x1 == 200 for s in shapes)  # span


def test_every_trace_respects_the_point_budget_and_keeps_the_spike() -> None:
    n = 300_000
    kl_max = _run(n).column("kl_max").copy()
    kl_max[123_456] = 50.0
    run = _series({**_run(n).columns, "kl_max": kl_max})
    figs = run_figures(run, NO_PRESET, options=ChartOptions(smoothing=0.6))
    for fig in figs.values():
        for trace in fig.data:
            assert len(trace.x) <= DEFAULT_BUDGET
    kl_max_traces = [t for t in figs["kl"].data if t.name == "kl_max"]
    assert any(50.0 in list(t.y) for t in kl_max_traces)


def test_smoothing_keeps_raw_faint_behind() -> None:
    run = _run()
    fig = beta_figure(run.steps, run.column("reward_mean"), ChartOptions(smoothing=0.8))
    raw, smooth = fig.data
    assert raw.opacity is not None and raw.opacity < 0.5 and raw.showlegend is False
    assert smooth.opacity is None


def test_log_y_option() -> None:
    run = _run()
    fig = kl_figure(run.steps, run.column("kl_mean"), None, options=ChartOptions(log_y=True))
    assert fig.layout.yaxis.type == "log"
    assert kl_figure(run.steps, run.column("kl_mean"), None).layout.yaxis.type == "linear"


def test_reward_figure_computes_total_when_missing() -> None:
    figs = run_figures(_run(), NO_PRESET)
    names = _trace_names(figs["reward"])
    assert "reward_mean" in names
    assert any(n.startswith("reward_total") and "computed" in n for n in names)


def test_reward_figure_uses_logged_total() -> None:
    run = _run(reward_total=np.zeros(1000))
    names = _trace_names(run_figures(run, NO_PRESET)["reward"])
    assert "reward_total" in names


def test_extra_series_panel_per_series() -> None:
    run = _run(entropy=np.ones(1000), response_length=np.full(1000, 12.0))
    assert extra_series_names(run.names) == ["response_length"]  # entropy: the Health row
    figs = run_figures(run, NO_PRESET, extra=["entropy", "response_length", "not_a_series"])
    assert _trace_names(figs["extra"]) == ["entropy", "response_length"]
    fig = series_figure(run.steps, {"entropy": run.column("entropy")})
    assert len(fig.data) == 1


def test_compare_figure_overlays_runs_by_step() -> None:
    a = CompareSeries("run-a", np.arange(100), np.linspace(0, 1, 100))
    b = CompareSeries("run-b", np.arange(50, 250), np.linspace(1, 0, 200))
    fig = compare_figure([a, b], "kl_mean")
    assert _trace_names(fig) == ["run-a", "run-b"]
    assert fig.data[1].x[0] == 50  # aligned by step, not by row


def _hue_is_red_or_green(color: str) -> bool:
    import colorsys

    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    hue, _lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    if saturation < 0.25:
        return False  # a grey says nothing
    degrees = hue * 360
    return degrees < 20 or degrees > 340 or 75 < degrees < 165


def test_compare_colours_are_neutral_and_health_is_in_the_name() -> None:
    """A run's colour says which run, never how it is doing: no red, no green, however many
    runs; its health is in its legend name."""
    runs = [
        CompareSeries(f"run-{i}", np.arange(10), np.ones(10), health=h)
        for i, h in enumerate(["critical", "warning", "no warnings", *[""] * 9])
    ]
    fig = compare_figure(runs, "kl_mean")
    colors = [t.line.color for t in fig.data]
    assert not [c for c in colors if _hue_is_red_or_green(c)], colors
    assert len(set(colors[:10])) == 10  # ten runs, ten colours
    assert _trace_names(fig)[:4] == [
        "run-0 · critical",
        "run-1 · warning",
        "run-2 · no warnings",
        "run-3",
    ]


def test_each_rule_has_its_own_lane_colour_and_legend_name() -> None:
    """Overlapping spans of three rules (the no-penalty-hacking sample: no_kl_penalty and
    kl_high warnings, a kl_growth critical) are told apart by colour, lane and name."""
    run = _run(500)
    alerts = [
        Alert("no_kl_penalty", "warning", 0, None, "beta", 0.0, "β is 0"),
        Alert("kl_high", "warning", 72, None, "kl_mean", 0.3, "KL above band"),
        Alert("kl_growth", "critical", 350, None, "kl_mean", 0.5, "KL keeps growing"),
    ]
    fig = kl_figure(run.steps, run.column("kl_mean"), run.column("kl_max"), alerts=alerts)
    spans = lanes(fig)
    by_rule = {s.name.split(" ")[0]: s for s in spans}
    assert set(by_rule) == {"no_kl_penalty", "kl_high", "kl_growth"}
    assert len({s.fillcolor for s in spans}) == 3  # a colour each
    assert len({(s.y0, s.y1) for s in spans}) == 3  # a lane each, at the top
    assert all(s.yref == "y domain" and s.y1 <= 1.0 and s.y0 >= 0.8 for s in spans)
    assert by_rule["kl_growth"].name == "kl_growth (critical)"  # its own severity
    assert by_rule["kl_high"].name == "kl_high (warning)"
    assert all(s.showlegend for s in spans)
    # Every colour is the rule's own, the same on every chart and run.
    from monitor.dashboard.charts import RULE_COLORS

    assert by_rule["kl_high"].fillcolor == RULE_COLORS["kl_high"]
    assert len(set(RULE_COLORS.values())) == len(RULE_COLORS)  # no two rules share one
    # Two episodes of one rule share its lane and its legend entry.
    again = [*alerts, Alert("kl_high", "warning", 10, 40, "kl_mean", 0.3, "KL above band")]
    fig = kl_figure(run.steps, run.column("kl_mean"), None, alerts=again)
    high = [s for s in lanes(fig) if s.name.startswith("kl_high")]
    assert len(high) == 2 and len({(s.y0, s.y1) for s in high}) == 1
    assert sum(bool(s.showlegend) for s in high) == 1


def test_log_scale_counts_what_it_cannot_draw() -> None:
    from monitor.dashboard.charts import compare_log_note, log_hidden_note, run_log_notes

    kl = np.full(100, 0.02)
    kl[:12] = -0.01  # k1 goes negative
    kl[20] = 0.0
    kl[30] = np.nan  # NaN is a break in the line, not a value ≤ 0
    run = _series({"kl_mean": kl, "kl_max": np.full(100, 0.1), "reward_mean": -np.ones(100)})
    assert run_log_notes(run, ChartOptions(log_y=False)) == {}
    notes = run_log_notes(run, ChartOptions(log_y=True))
    assert notes == {"kl": "13 values ≤ 0 not drawn on the log scale"}  # reward is linear
    assert log_hidden_note({"a": np.array([-1.0]), "b": np.array([0.0, 0.0])}) == (
        "3 values ≤ 0 not drawn on the log scale (a 1, b 2)"
    )
    assert log_hidden_note({"a": np.array([-1.0])}) == "1 value ≤ 0 not drawn on the log scale"
    series = [CompareSeries("r", np.arange(100), kl)]
    assert compare_log_note(series, ChartOptions(log_y=True)) == notes["kl"]
    assert compare_log_note(series, ChartOptions()) is None


def test_empty_run_gives_empty_figures_not_errors() -> None:
    run = _series({"kl_mean": np.zeros(0), "beta": np.zeros(0)})
    figs = run_figures(run, NO_PRESET)
    assert set(figs) == {"kl", "beta", "reward"}
    assert all(len(t.x) == 0 for t in reward_figure(np.zeros(0), np.zeros(0), None).data)


def test_band_labels_sit_on_the_band_with_a_log_axis() -> None:
    run = _run()
    band = kl_band(_thresholds(TARGETED))
    assert band is not None
    for log_y, expected in ((False, band.high), (True, math.log10(band.high))):
        fig = kl_figure(
            run.steps, run.column("kl_mean"), None, band=band, options=ChartOptions(log_y=log_y)
        )
        label = next(a for a in fig.layout.annotations if a.text == band.label)
        assert label.y == pytest.approx(expected)


def test_alerts_on_other_metrics_sit_on_the_kl_line() -> None:
    run = _run()
    stalled = Alert("run_stalled", "warning", 999, None, "time", 3600.0, "no record")
    fig = kl_figure(run.steps, run.column("kl_mean"), run.column("kl_max"), alerts=[stalled])
    marker = next(t for t in fig.data if t.name == "warning alerts")
    assert marker.y[0] == pytest.approx(run.column("kl_max")[999])  # not 3600 on a KL axis


def test_beta_chart_only_when_beta_is_known_and_title_says_what_kl_is() -> None:
    from monitor.presets import PRESETS, meaning_for

    run = _series({"kl_mean": np.full(5, 0.02), "reward_mean": np.linspace(0, 1, 5)})
    names = ["train/kl", "train/reward", "train/completions/mean_length"]
    figs = run_figures(run, meaning_for(names, {}, PRESETS["trl_grpo"]))
    assert "beta" not in figs  # TRL logs no β and none came from a config
    title = figs["kl"].layout.title.text
    assert "mean per token, k3" in title and "max KL not logged" in title

    figs = run_figures(run, meaning_for(names, {"config": {"beta": 0.04}}, PRESETS["trl_grpo"]))
    assert list(figs["beta"].data[0].y) == [0.04] * 5  # constant β from the config


# -- the Health row ---------------------------------------------------------------------------


def test_health_alert_span_is_drawn_on_its_chart_like_on_the_kl_chart() -> None:
    n = 1000
    truncated = np.full(n, 0.02)
    truncated[400:600] = 0.9
    run = _run(n, entropy=np.linspace(2.0, 1.5, n), truncated_frac=truncated)
    alerts = [
        Alert("completions_truncated", "warning", 415, 610, "truncated_frac", 0.9, "cut off"),
        Alert("entropy_collapse", "warning", 900, None, "entropy", 1.55, "collapsing"),
    ]
    fig = health_figure(run.steps, {"truncated_frac": truncated}, "Truncated", alerts)
    marker = next(t for t in fig.data if t.name == "warning alerts")
    assert list(marker.x) == [415] and marker.y[0] == pytest.approx(0.9)  # at its value
    assert "cut off" in marker.text[0]
    shapes = lanes(fig)
    assert [(s.type, s.x0, s.x1) for s in shapes] == [("rect", 415, 610)]  # the entropy one: no

    # run_figures routes each alert to the chart of its metric; the KL chart keeps them all
    charts = health_row(run.names).charts
    figs = run_figures(run, NO_PRESET, alerts, health=charts)
    assert {health_figure_name(c) for c in charts} == {"health_entropy", "health_truncated_frac"}
    entropy = figs["health_entropy"]
    assert [(s.type, s.x0) for s in lanes(entropy)] == [("rect", 900)]  # active: to the end
    assert [(s.x0, s.x1) for s in lanes(figs["health_truncated_frac"])] == [(415, 610)]
    assert len(lanes(figs["kl"])) == 2


def test_health_traces_are_downsampled_and_keep_the_spike() -> None:
    n = 300_000
    grad = np.ones(n)
    grad[123_456] = 500.0
    fig = health_figure(np.arange(n), {"grad_norm": grad}, "Gradient norm")
    (trace,) = fig.data
    assert len(trace.x) <= DEFAULT_BUDGET and 500.0 in list(trace.y)


def test_rollout_chart_has_a_panel_per_family_and_shares_stay_linear() -> None:
    n = 200
    series = {
        "rollout_logp_diff": np.full(n, 0.01),
        "rollout_logp_diff_max": np.full(n, 0.5),
        "rollout_is_ratio": np.ones(n),
        "rollout_is_ratio_min": np.full(n, 0.8),
        "rollout_is_ratio_max": np.full(n, 1.3),
    }
    alert = Alert("rollout_mismatch", "warning", 50, 80, "rollout_is_ratio", 1.4, "mismatch")
    fig = health_figure(np.arange(n), series, "Rollout", [alert], ChartOptions(log_y=True))
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["rollout_logp_diff", "rollout_is_ratio"]
    by_axis: dict[str, list[str]] = {}
    for t in fig.data:
        by_axis.setdefault(t.yaxis, []).append(t.name)
    assert by_axis["y"] == ["rollout_logp_diff", "rollout_logp_diff_max"]
    assert by_axis["y2"][:3] == ["rollout_is_ratio", "rollout_is_ratio_min", "rollout_is_ratio_max"]
    assert by_axis["y2"][3] == "warning alerts"  # on the panel of its metric
    (span,) = lanes(fig)
    assert span.yref == "y2 domain" and (span.x0, span.x1) == (50, 80)
    assert fig.layout.yaxis.type == "log"
    fractions = health_figure(
        np.arange(n), {"truncated_frac": np.zeros(n)}, "T", [], ChartOptions(log_y=True)
    )
    assert fractions.layout.yaxis.type != "log"  # 0 is the healthy share: always linear
