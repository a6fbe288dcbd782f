"""Pure functions: series (+ alerts) → plotly figures. No Streamlit here.

Every trace goes through `monitor.dashboard.downsample` first, so a figure never carries more than
about `DEFAULT_BUDGET` points per trace however long the run — while each bucket's min and
max survive, so a one-step spike in a million steps is still drawn.

Smoothing is TensorBoard's debiased EMA, applied to the full-resolution series before
downsampling (smoothing the reduced points would weight buckets, not steps). When smoothing
is on, the raw series stays visible, faint, behind it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from monitor.alerts import Alert, Thresholds
from monitor.alerts.config import RULE_IDS
from monitor.dashboard.downsample import DEFAULT_BUDGET, downsample
from monitor.dashboard.run_view import HEALTH_CHARTS, HealthChart
from monitor.presets import KLMeaning
from monitor.table import SeriesData

KL_METRICS = ("kl_mean", "kl_max")  # alerts whose value can sit on the KL axis
# Health series drawn on a linear axis whatever the log-y toggle: shares whose healthy value
# is 0, a signed KL, a correlation (a log axis would hide their zeros and negatives).
LINEAR_HEALTH_SERIES = ("truncated_frac", "zero_std_frac", "rollout_kl", "rollout_prob_corr")
MAX_ALERT_SPANS = 50  # shaded alert spans per chart; beyond that shapes slow plotly down

SEVERITY_COLORS = {"info": "#1f77b4", "warning": "#ff9f1c", "critical": "#d62728"}
# Each rule's spans in its own colour (the same on every chart and run), in a lane of its own
# at the top of the chart and named in the legend: overlapping episodes of different rules
# stay apart. Severity is the markers' colour and the legend's "(critical)".
# No green (the healthy band's colour) and no plain red (critical markers).
_RULE_PALETTE = (
    "#2E91E5", "#E15F99", "#B68100", "#750D86", "#EB663B", "#511CFB", "#222A2A",
    "#778AAE", "#DA16FF", "#6C4516", "#0D2A63", "#A777F1", "#17BECF", "#B2828D",
    "#FB00D1", "#8C564B", "#7F7F7F", "#DA60CA", "#393B79",
)  # fmt: skip
RULE_COLORS = dict(zip(RULE_IDS, itertools.cycle(_RULE_PALETTE), strict=False))
LANE_HEIGHT = 0.035  # of the plot's height, per rule with spans on a chart
SPAN_OPACITY = 0.06  # the faint full-height shading behind the lines
LANE_OPACITY = 0.75
KL_LEGEND_ROOM = 60  # px added to the KL chart when its legend sits below it
# Compare colours say which run, never how it is doing: no red or green (a run's health is
# in its legend name). Blues, purples, a gold-brown, greys.
COMPARE_COLORS = (
    "#1f77b4", "#9467bd", "#8c6d31", "#17becf", "#7f7f7f",
    "#393b79", "#bc80bd", "#6b6ecf", "#636363", "#5254a3",
)  # fmt: skip
SERIES_COLORS = {
    "kl_mean": "#1f77b4",
    "kl_max": "#9467bd",
    "beta": "#2ca02c",
    "reward_mean": "#ff7f0e",
    "reward_total": "#8c564b",
}
RAW_OPACITY = 0.25  # raw series behind a smoothed one: visible, not competing
CHART_HEIGHT = 340


# A page's figures by name: "kl", "beta", "reward", "extra", and "health_<chart>" for each
# chart of the Health row (health_figure_name).
Figures = dict[str, go.Figure]


@dataclass(frozen=True)
class ChartOptions:
    log_y: bool = False
    smoothing: float = 0.0  # TensorBoard's weight: 0 = raw, 0.99 = very smooth
    budget: int = DEFAULT_BUDGET
    height: int = CHART_HEIGHT


@dataclass(frozen=True)
class KLBand:
    """The healthy region drawn on the KL chart."""

    low: float
    high: float
    target: float | None
    label: str


# -- numbers -------------------------------------------------------------------------------


def ema_smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased EMA: s_t = Σ w^i x_{t-i} / Σ w^i over the finite values so far.

    Non-finite values are skipped (they neither update the average nor get smoothed: they
    stay NaN), exactly as TensorBoard does. That is pandas' `adjust=True` EWM with
    α = 1 − w over the finite values, which runs in C (~10 ms for 1M points).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    values = np.asarray(values, dtype=np.float64)
    if weight == 0.0 or values.size == 0:
        return values.copy()
    finite = np.isfinite(values)
    out = np.full(values.shape, np.nan)
    smoothed = pd.Series(values[finite]).ewm(alpha=1.0 - weight, adjust=True).mean()
    out[finite] = smoothed.to_numpy()
    return out


def reward_total(reward_mean: np.ndarray, beta: np.ndarray, kl_mean: np.ndarray) -> np.ndarray:
    """Total reward = score − β·KL (the seed's r_total), for runs that do not log it."""
    return np.asarray(reward_mean, float) - np.asarray(beta, float) * np.asarray(kl_mean, float)


def kl_band(thresholds: Thresholds | None) -> KLBand | None:
    """The healthy band: exactly the one the alert engine judges against (one place for
    thresholds: monitor.alerts). None before the engine has seen rows, and when no band fits
    the plotted numbers: per-sequence KL that the engine divides by the response length row
    by row (the chart shows the raw sum), or a band the rules turned off."""
    if thresholds is None or thresholds.per_token_scaled:
        return None
    low, high = _positive_float(thresholds.low), _positive_float(thresholds.high)
    if low is None or high is None or low >= high:
        return None
    target = _positive_float(thresholds.target)
    label = f"healthy {low:.3g}–{high:.3g}" + (f" (target {target:g})" if target else "")
    return KLBand(low, high, target, label)


def _positive_float(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None


# -- traces --------------------------------------------------------------------------------


def line_traces(
    steps: np.ndarray,
    values: np.ndarray,
    name: str,
    options: ChartOptions,
    color: str | None = None,
) -> list[go.Scatter]:
    """One series as traces: raw (faint when smoothed) and, if smoothing, the EMA on top."""
    color = color or SERIES_COLORS.get(name)
    values = np.asarray(values, dtype=np.float64)
    x, y = downsample(steps, values, options.budget)
    raw = go.Scatter(
        x=x,
        y=y,
        name=name,
        mode="lines",
        line={"color": color, "width": 1.5},
        legendgroup=name,
        connectgaps=False,
    )
    if options.smoothing <= 0:
        return [raw]
    raw.update(opacity=RAW_OPACITY, showlegend=False, hoverinfo="skip")
    xs, ys = downsample(steps, ema_smooth(values, options.smoothing), options.budget)
    smooth = go.Scatter(
        x=xs,
        y=ys,
        name=name,
        mode="lines",
        line={"color": color, "width": 2},
        legendgroup=name,
        connectgaps=False,
    )
    return [raw, smooth]


def _base_figure(title: str, y_title: str, options: ChartOptions) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        height=options.height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        hovermode="x unified",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        # A constant uirevision keeps the user's zoom across live refreshes.
        uirevision=title,
        xaxis={"title": "step"},
        yaxis={"title": y_title, "type": "log" if options.log_y else "linear"},
    )
    return fig


# -- figures -------------------------------------------------------------------------------


def kl_figure(
    steps: np.ndarray,
    kl_mean: np.ndarray,
    kl_max: np.ndarray | None,
    *,
    band: KLBand | None = None,
    alerts: Iterable[Alert] = (),
    options: ChartOptions | None = None,
    title: str = "KL divergence from the reference",
) -> go.Figure:
    """Mean and max KL vs step; healthy band and target shaded; alerts marked."""
    options = options or ChartOptions()
    fig = _base_figure(title, "KL", options)
    if band is not None:
        _add_band(fig, band, options.log_y)
    for name, values in (("kl_mean", kl_mean), ("kl_max", kl_max)):
        if values is not None and np.isfinite(values).any():
            for trace in line_traces(steps, values, name, options):
                fig.add_trace(trace)
    kl_series = [c for c in (kl_max, kl_mean) if c is not None]
    alerts = list(alerts)
    _add_alerts(fig, alerts, steps, kl_series, options)
    if alerts:
        # A rule per lane makes a long legend: below the chart, where it cannot run into
        # the title, with room for two rows.
        fig.update_layout(
            height=options.height + KL_LEGEND_ROOM,
            legend={"orientation": "h", "y": -0.15, "yanchor": "top", "x": 0, "xanchor": "left"},
        )
    return fig


def _add_band(fig: go.Figure, band: KLBand, log_y: bool) -> None:
    fig.add_hrect(y0=band.low, y1=band.high, fillcolor="#2ca02c", opacity=0.10, line_width=0)
    # Labels as plain annotations: plotly places shape labels wrongly on log axes, where an
    # annotation's y is given in log10 units.
    _label(fig, band.label, band.high, log_y, x=0.0, xanchor="left", yanchor="bottom")
    if band.target is not None:
        fig.add_hline(y=band.target, line={"color": "#2ca02c", "dash": "dash", "width": 1.5})
        _label(fig, f"target {band.target:g}", band.target, log_y, 1.0, "right", "top")


def _label(
    fig: go.Figure, text: str, y: float, log_y: bool, x: float, xanchor: str, yanchor: str
) -> None:
    fig.add_annotation(
        text=text,
        x=x,
        xref="paper",
        xanchor=xanchor,
        y=math.log10(y) if log_y else y,
        yref="y",
        yanchor=yanchor,
        showarrow=False,
        font={"size": 10, "color": "#2ca02c"},
    )


def _alert_y(
    alert: Alert,
    steps: np.ndarray,
    series: Sequence[np.ndarray],
    top: float,
    log_y: bool,
    on_axis: Collection[str] = KL_METRICS,
) -> float:
    """Where to draw an alert's marker: its value when drawable on this axis, else the
    chart's series at its step, else the top of the chart (a NaN alert has no value to sit
    on)."""
    value = alert.value
    on_this_axis = alert.metric in on_axis  # run_stalled's value is seconds, β's is β …
    drawable = isinstance(value, (int, float)) and math.isfinite(value)
    if on_this_axis and drawable and (value > 0 or not log_y):
        return float(value)
    i = int(np.searchsorted(steps, alert.step))
    if i < steps.size and steps[i] == alert.step:
        for column in series:
            v = float(column[i])
            if math.isfinite(v) and (v > 0 or not log_y):
                return v
    return top


def _finite_top(series: Sequence[np.ndarray], log_y: bool) -> float:
    tops = []
    for column in series:
        finite = column[np.isfinite(column)]
        if log_y:
            finite = finite[finite > 0]
        if finite.size:
            tops.append(float(finite.max()))
    return max(tops) if tops else 1.0


def _add_alerts(
    fig: go.Figure,
    alerts: list[Alert],
    steps: np.ndarray,
    series: Sequence[np.ndarray],
    options: ChartOptions,
    on_axis: Collection[str] = KL_METRICS,
    row: int | None = None,
) -> None:
    """Mark alerts on a chart: a marker (▼) per alert at its value (when its metric is one
    of `on_axis`, the chart's own series) or on the chart's line, and a shaded span where it
    lasted. Every chart that shows alerts (KL, Health) draws them here; `row` is the panel
    of a figure with several."""
    if not alerts:
        return
    where: dict[str, int] = {} if row is None else {"row": row, "col": 1}
    top = _finite_top(series, options.log_y)
    for severity in ("info", "warning", "critical"):
        group = [a for a in alerts if a.severity == severity]
        if not group:
            continue
        fig.add_trace(
            go.Scatter(
                x=[a.step for a in group],
                y=[_alert_y(a, steps, series, top, options.log_y, on_axis) for a in group],
                mode="markers",
                name=f"{severity} alerts",
                marker={
                    "color": SEVERITY_COLORS[severity],
                    "size": 11,
                    "symbol": "triangle-down",
                    "line": {"width": 1, "color": "white"},
                },
                text=[f"{a.rule}: {a.message}" for a in group],
                hovertemplate="step %{x}<br>%{text}<extra></extra>",
            ),
            **where,
        )
    _add_alert_spans(fig, alerts, steps, where)


def _add_alert_spans(
    fig: go.Figure, alerts: list[Alert], steps: np.ndarray, where: Mapping[str, int]
) -> None:
    """Shade where alerts lasted, each rule in its own colour (RULE_COLORS): faintly over
    the whole height, and solidly in the rule's own lane at the top of the chart, named in
    the legend ("kl_growth (critical)"), so overlapping episodes of different rules stay
    apart. Most recent first, capped: shapes are costly in plotly. An episode of one step
    is a dotted line in its rule's colour."""
    last_step = int(steps[-1]) if steps.size else 0
    shown = sorted(alerts, key=lambda a: a.step, reverse=True)[:MAX_ALERT_SPANS]
    lanes = {rule: i for i, rule in enumerate(alert_lanes(shown))}
    named: set[str] = set()
    for alert in shown:
        color = rule_color(alert.rule)
        legend = {
            "name": f"{alert.rule} ({alert.severity})",
            "legendgroup": f"rule:{alert.rule}",
            "showlegend": alert.rule not in named,
        }
        named.add(alert.rule)
        end = alert.end_step if alert.end_step is not None else last_step
        if end <= alert.step:
            line = {"width": 1.5, "dash": "dot", "color": color}
            fig.add_vline(x=alert.step, line=line, opacity=0.8, **legend, **where)
            continue
        fig.add_vrect(
            x0=alert.step, x1=end, line_width=0, opacity=SPAN_OPACITY, fillcolor=color, **where
        )
        top = 1.0 - lanes[alert.rule] * LANE_HEIGHT
        fig.add_shape(
            type="rect",
            x0=alert.step,
            x1=end,
            xref="x",
            y0=top - LANE_HEIGHT,
            y1=top,
            yref="y domain",
            fillcolor=color,
            opacity=LANE_OPACITY,
            line_width=0,
            layer="below",  # under the lines: a lane never hides a value
            **legend,
            **where,
        )


def alert_lanes(alerts: Iterable[Alert]) -> list[str]:
    """The rules with episodes on a chart, in lane order (top lane first): RULE_IDS order,
    so a rule keeps its place from chart to chart."""
    present = {a.rule for a in alerts}
    known = [rule for rule in RULE_IDS if rule in present]
    return known + sorted(present - set(known))


def rule_color(rule: str) -> str:
    return RULE_COLORS.get(rule, "#888888")


def beta_figure(
    steps: np.ndarray, beta: np.ndarray, options: ChartOptions | None = None
) -> go.Figure:
    """β, the KL coefficient: how hard the controller pulls the policy back."""
    options = options or ChartOptions()
    fig = _base_figure("β (KL coefficient)", "β", options)
    for trace in line_traces(steps, beta, "beta", options):
        fig.add_trace(trace)
    return fig


def reward_figure(
    steps: np.ndarray,
    reward_mean: np.ndarray,
    total: np.ndarray | None,
    options: ChartOptions | None = None,
    *,
    total_computed: bool = False,
) -> go.Figure:
    """Raw score and total reward (score − β·KL): reward bought with drift shows as a gap."""
    options = options or ChartOptions(log_y=False)
    # Rewards go negative: a log axis would hide them, so this chart is always linear.
    options = ChartOptions(False, options.smoothing, options.budget, options.height)
    fig = _base_figure("Reward", "reward", options)
    for trace in line_traces(steps, reward_mean, "reward_mean", options):
        fig.add_trace(trace)
    if total is not None:
        for trace in line_traces(steps, total, "reward_total", options):
            if total_computed:
                trace.name = "reward_total (score − β·KL, computed)"
            fig.add_trace(trace)
    return fig


def series_figure(
    steps: np.ndarray,
    series: Mapping[str, np.ndarray],
    options: ChartOptions | None = None,
    title: str = "Other series",
) -> go.Figure:
    """Extra series (entropy, lengths, losses …), one panel each so scales do not clash."""
    from plotly.subplots import make_subplots

    options = options or ChartOptions()
    names = list(series)
    rows = max(1, len(names))
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04 if rows > 1 else 0.0,
        subplot_titles=names or None,
    )
    palette = series_palette()
    for row, name in enumerate(names, start=1):
        for trace in line_traces(steps, series[name], name, options, next(palette)):
            fig.add_trace(trace, row=row, col=1)
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        height=max(options.height, 60 + 200 * rows),
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        hovermode="x unified",
        uirevision=title,
        showlegend=False,
    )
    if options.log_y:
        fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="step", row=rows, col=1)
    return fig


def health_figure(
    steps: np.ndarray,
    series: Mapping[str, np.ndarray],
    title: str,
    alerts: Iterable[Alert] = (),
    options: ChartOptions | None = None,
) -> go.Figure:
    """One chart of the Health row: its series, one panel per family (a mean with its min
    and max) so scales do not clash, and the alerts on those series marked on their panel
    as the KL chart marks its alerts."""
    from plotly.subplots import make_subplots

    options = options or ChartOptions()
    panels = series_families(list(series))
    rows = max(1, len(panels))
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08 if rows > 1 else 0.0,
        subplot_titles=list(panels) if rows > 1 else None,
    )
    alerts = list(alerts)
    palette = series_palette()
    for row, names in enumerate(panels.values(), start=1):
        log_y = options.log_y and not any(n in LINEAR_HEALTH_SERIES for n in names)
        panel_options = ChartOptions(log_y, options.smoothing, options.budget, options.height)
        for name in names:
            for trace in line_traces(steps, series[name], name, panel_options, next(palette)):
                fig.add_trace(trace, row=row, col=1)
        if log_y:
            fig.update_yaxes(type="log", row=row, col=1)
        if rows == 1:  # several panels are named by their subplot titles
            fig.update_yaxes(title_text=next(iter(panels)), row=row, col=1)
        columns = [series[n] for n in names]
        on_panel = [a for a in alerts if a.metric in names]
        _add_alerts(fig, on_panel, steps, columns, panel_options, on_axis=names, row=row)
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        height=max(options.height, 60 + 180 * rows),
        margin={"l": 10, "r": 10, "t": 40 if rows == 1 else 60, "b": 10},
        hovermode="x unified",
        # Below the chart: a third of the page's width has no room for one beside the title.
        # One series needs none (its axis is named; alert markers explain themselves).
        legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0, "xanchor": "left"},
        showlegend=len(series) > 1,
        uirevision=title,
    )
    fig.update_xaxes(title_text="step", row=rows, col=1)
    return fig


def series_families(names: Sequence[str]) -> dict[str, list[str]]:
    """Series grouped by family: `rollout_is_ratio_min` and `_max` beside `rollout_is_ratio`."""
    families: dict[str, list[str]] = {}
    for name in names:
        stem = name.removesuffix("_min").removesuffix("_max")
        families.setdefault(stem, []).append(name)
    return families


def health_figure_name(chart: HealthChart) -> str:
    """The key of a Health chart's figure in `Figures`."""
    return f"health_{chart.name}"


@dataclass(frozen=True)
class CompareSeries:
    label: str
    steps: np.ndarray
    values: np.ndarray
    health: str = ""  # the run's health in a word (views.health_badge), shown in its name

    @property
    def name(self) -> str:
        return compare_name(self.label, self.health)


def compare_name(label: str, health: str) -> str:
    """A run's name on a compare chart: which run, and its health in a word."""
    return f"{label} · {health}" if health else label


def compare_figure(
    runs: Sequence[CompareSeries], metric: str, options: ChartOptions | None = None
) -> go.Figure:
    """Several runs' `metric` overlaid, aligned by step. Colours are neutral (no red or
    green, which would suggest a health the run may not have); each run's health is said
    in its legend name ("runs/a · critical")."""
    options = options or ChartOptions()
    fig = _base_figure(f"{metric} by run", metric, options)
    palette = itertools.cycle(COMPARE_COLORS)
    for item in runs:
        color = next(palette)
        for trace in line_traces(item.steps, item.values, item.name, options, color):
            fig.add_trace(trace)
    return fig


# -- what a log axis cannot draw ----------------------------------------------------------------


def log_hidden_note(series: Mapping[str, np.ndarray]) -> str | None:
    """The note under a log-y chart: how many values ≤ 0 it cannot draw (k1 KL goes
    negative, a loss crosses 0), instead of letting them vanish. None when there are none."""
    counts = {name: int(np.count_nonzero(np.asarray(v, float) <= 0)) for name, v in series.items()}
    counts = {name: n for name, n in counts.items() if n}
    total = sum(counts.values())
    if not total:
        return None
    note = f"{total:,} value{'s' if total != 1 else ''} ≤ 0 not drawn on the log scale"
    if len(counts) > 1:
        note += " (" + ", ".join(f"{name} {n:,}" for name, n in counts.items()) + ")"
    return note


def run_log_notes(
    data: SeriesData,
    options: ChartOptions,
    *,
    extra: Sequence[str] = (),
    health: Sequence[HealthChart] = (),
) -> dict[str, str]:
    """Per figure of `run_figures` (by its name), the log-scale note, when log-y is on and
    the figure's log-scaled series have values ≤ 0. The reward chart and the linear Health
    series are never log-scaled, so they have none."""
    if not options.log_y:
        return {}
    columns = data.columns
    charted = {
        "kl": ("kl_mean", "kl_max"),
        "beta": ("beta",),
        "extra": tuple(extra),
        **{
            health_figure_name(chart): tuple(
                s for s in chart.series if s not in LINEAR_HEALTH_SERIES
            )
            for chart in health
        },
    }
    notes = {}
    for figure, names in charted.items():
        note = log_hidden_note({n: columns[n] for n in names if n in columns})
        if note:
            notes[figure] = note
    return notes


def compare_log_note(runs: Sequence[CompareSeries], options: ChartOptions) -> str | None:
    """The compare chart's log-scale note (see log_hidden_note), counted per run."""
    if not options.log_y:
        return None
    return log_hidden_note({item.label: item.values for item in runs})


def series_palette() -> Iterator[str]:
    """Colours for series without one of their own (plotly's D3 cycle): the plotly figures
    and the live charts (live_spec) colour the same series alike."""
    import plotly.colors

    return itertools.cycle(plotly.colors.qualitative.D3)


def kl_title(meaning: KLMeaning) -> str:
    """The KL chart's title says what the plotted number is, and what is not logged."""
    title = "KL divergence from the reference"
    if not meaning.preset:
        return title
    if not meaning.kl_found:
        return f"{title}: no KL series found ({meaning.trainer})"
    units = {"per_token": "mean per token", "per_sequence": "summed per sequence"}.get(
        meaning.units or "", "units unknown"
    )
    estimator = f", {meaning.estimator}" if meaning.estimator else ""
    title += f" — {units}{estimator}"
    if meaning.preset != "klwatch":
        title += f" ({meaning.mapping['kl_mean']})"
    if not meaning.kl_max_logged:
        title += " · max KL not logged"
    return title


# -- whole run -----------------------------------------------------------------------------


def run_figures(
    data: SeriesData,
    meaning: KLMeaning,
    alerts: Iterable[Alert] = (),
    options: ChartOptions | None = None,
    *,
    extra: Sequence[str] = (),
    thresholds: Thresholds | None = None,
    health: Sequence[HealthChart] = (),
) -> Figures:
    """The run page's figures: "kl", "beta", "reward", (if any picked) "extra", and one
    per chart of the Health row in `health` (RunView.health.charts), named by
    health_figure_name."""
    options = options or ChartOptions()
    alerts = list(alerts)
    picked = [name for name in extra if name in data.columns]
    steps = data.steps
    nan = np.full(steps.size, np.nan)
    columns = dict(data.columns)
    if "beta" not in columns and meaning.beta is not None:
        columns["beta"] = np.full(steps.size, meaning.beta)  # constant β from the config

    def col(name: str) -> np.ndarray:
        return columns.get(name, nan)  # a series the run never logged draws as empty

    figures = {
        "kl": kl_figure(
            steps,
            col("kl_mean"),
            columns.get("kl_max"),
            band=kl_band(thresholds),
            alerts=alerts,
            options=options,
            title=kl_title(meaning),
        ),
    }
    if "beta" in columns:  # β chart only when β is known (most foreign trainers never log it)
        figures["beta"] = beta_figure(steps, col("beta"), options)
    computed = "reward_total" not in columns
    total = (
        reward_total(col("reward_mean"), col("beta"), col("kl_mean"))
        if computed
        else columns["reward_total"]
    )
    figures["reward"] = reward_figure(
        steps, col("reward_mean"), total, options, total_computed=computed
    )
    if picked:
        figures["extra"] = series_figure(steps, {n: columns[n] for n in picked}, options)
    for chart in health:
        logged = {n: columns[n] for n in chart.series if n in columns}
        if logged:
            figures[health_figure_name(chart)] = health_figure(
                steps, logged, chart.title, alerts, options
            )
    return figures


CORE_SERIES = ("time", "kl_mean", "kl_max", "beta", "reward_mean", "reward_total")
# Series with a chart of their own in the Health row: not offered again among the others.
HEALTH_CHARTED = tuple(s for chart in HEALTH_CHARTS for s in chart.series)


def extra_series_names(series_names: Iterable[str]) -> list[str]:
    """Series beyond the ones with their own chart (lengths, losses, clip fraction …)."""
    return sorted(n for n in series_names if n not in CORE_SERIES and n not in HEALTH_CHARTED)
