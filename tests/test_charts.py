"""monitor.charts: figures from series, pure (no Streamlit), downsampled, alerts marked."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from monitor.alerts import Alert, resolve_thresholds
from monitor.charts import (
    DEFAULT_BAND,
    ChartOptions,
    CompareSeries,
    beta_figure,
    compare_figure,
    ema_smooth,
    extra_series_names,
    kl_band,
    kl_figure,
    reward_figure,
    reward_total,
    run_figures,
    series_figure,
)
from monitor.downsample import DEFAULT_BUDGET
from monitor.rules import AlertConfig


@dataclass
class FakeRun:
    columns: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> np.ndarray:
        return np.arange(next(iter(self.columns.values())).size, dtype=np.int64)

    @property
    def series_names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str) -> np.ndarray:
        return self.columns.get(name, np.full(self.steps.size, np.nan))


def _run(n: int = 1000, **extra: np.ndarray) -> FakeRun:
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
    return FakeRun(columns, {"kl": {"target": 0.05, "units": "per_token"}})


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
    band = kl_band({"kl": {"target": 0.02, "units": "per_token"}})
    assert band is not None and band.target == 0.02
    assert band.low == pytest.approx(0.005) and band.high == pytest.approx(0.04)


def test_band_defaults_to_the_seeds_range_per_token() -> None:
    band = kl_band({})
    assert band is not None and (band.low, band.high) == DEFAULT_BAND and band.target is None


def test_no_band_for_per_sequence_kl_without_target() -> None:
    assert kl_band({"kl": {"units": "per_sequence", "target": None}}) is None


def test_band_from_alert_thresholds_wins() -> None:
    th = SimpleNamespace(low=0.2, high=0.4, target=0.3, per_token_scaled=False)
    band = kl_band({"kl": {"target": 0.02}}, th)
    assert band is not None and (band.low, band.high, band.target) == (0.2, 0.4, 0.3)
    scaled = SimpleNamespace(low=0.01, high=0.1, target=None, per_token_scaled=True)
    assert kl_band({"kl": {"units": "per_sequence"}}, scaled) is None


def test_fallback_band_matches_the_alert_engines_defaults() -> None:
    # Without an engine at hand the chart must still draw the band the alerts judge by.
    for info in ({"kl": {"target": 0.05, "units": "per_token"}}, {}):
        th = resolve_thresholds(AlertConfig(), info)
        band = kl_band(info)
        assert band is not None
        assert (band.low, band.high) == pytest.approx((th.low, th.high))


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
        band=kl_band(run.info),
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
    run = _run(n)
    run.columns["kl_max"] = run.columns["kl_max"].copy()
    run.columns["kl_max"][123_456] = 50.0
    figs = run_figures(run, options=ChartOptions(smoothing=0.6))
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
    figs = run_figures(_run())
    names = _trace_names(figs["reward"])
    assert "reward_mean" in names
    assert any(n.startswith("reward_total") and "computed" in n for n in names)


def test_reward_figure_uses_logged_total() -> None:
    run = _run(reward_total=np.zeros(1000))
    names = _trace_names(run_figures(run)["reward"])
    assert "reward_total" in names


def test_extra_series_panel_per_series() -> None:
    run = _run(entropy=np.ones(1000), response_length=np.full(1000, 12.0))
    assert extra_series_names(run.series_names) == ["entropy", "response_length"]
    figs = run_figures(run, extra=["entropy", "response_length", "not_a_series"])
    assert _trace_names(figs["extra"]) == ["entropy", "response_length"]
    fig = series_figure(run.steps, {"entropy": run.column("entropy")})
    assert len(fig.data) == 1


def test_compare_figure_overlays_runs_by_step() -> None:
    a = CompareSeries("run-a", np.arange(100), np.linspace(0, 1, 100))
    b = CompareSeries("run-b", np.arange(50, 250), np.linspace(1, 0, 200))
    fig = compare_figure([a, b], "kl_mean")
    assert _trace_names(fig) == ["run-a", "run-b"]
    assert fig.data[1].x[0] == 50  # aligned by step, not by row


def test_empty_run_gives_empty_figures_not_errors() -> None:
    run = FakeRun({"kl_mean": np.zeros(0), "beta": np.zeros(0)})
    figs = run_figures(run)
    assert set(figs) == {"kl", "beta", "reward"}
    assert all(len(t.x) == 0 for t in reward_figure(np.zeros(0), np.zeros(0), None).data)


def test_band_labels_sit_on_the_band_with_a_log_axis() -> None:
    run = _run()
    band = kl_band(run.info)
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

    columns = {"train/kl": np.full(5, 0.02), "train/reward": np.linspace(0, 1, 5)}
    run = FakeRun(dict(columns))
    names = ["train/kl", "train/reward", "train/completions/mean_length"]
    run.meaning = meaning_for(names, {}, PRESETS["trl_grpo"])  # type: ignore[attr-defined]
    run.columns = {"kl_mean": columns["train/kl"], "reward_mean": columns["train/reward"]}
    figs = run_figures(run)
    assert "beta" not in figs  # TRL logs no β and none came from a config
    title = figs["kl"].layout.title.text
    assert "mean per token, k3" in title and "max KL not logged" in title

    run.meaning = meaning_for(names, {"config": {"beta": 0.04}}, PRESETS["trl_grpo"])  # type: ignore[attr-defined]
    figs = run_figures(run)
    assert list(figs["beta"].data[0].y) == [0.04] * 5  # constant β from the config
