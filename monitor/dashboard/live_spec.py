"""What the live charts draw, as plain JSON-ready data: no numbers, no Streamlit here.

The run page's live charts (monitor/dashboard/static/live_charts.js, mounted by app.py)
get their *layout* from one Streamlit run — which charts, which series in which colour, the
healthy band, the alerts and their lanes — and their *rows* from the live endpoint
(monitor/dashboard/live_api.py), polled without any Streamlit rerun. This module makes the
layout from the same facts the plotly figures use (charts.py: titles, colours, band, lanes,
which Health series are linear), so the two paths draw the same page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from monitor.alerts import Alert
from monitor.dashboard import charts, views
from monitor.dashboard.run_view import RunView

# The spec's own keys for series the run may not log itself (live_api resolves them).
COMPUTED_TOTAL = "reward_total"
Spec = dict[str, Any]


def _series(name: str, color: str | None = None, label: str | None = None) -> dict[str, str]:
    return {
        "key": name,
        "label": label or name,
        "color": color or charts.SERIES_COLORS.get(name, "#1f77b4"),
    }


def _alerts(alerts: Iterable[Alert], on_axis: Sequence[str]) -> list[dict[str, Any]]:
    """Alerts as the chart draws them: a marker at `value` when it sits on this axis (its
    metric is one of the panel's series), else on the line at its step (the browser finds
    it), and a span from `step` to `end` (None: still active)."""
    shown = sorted(alerts, key=lambda a: a.step, reverse=True)[: charts.MAX_ALERT_SPANS]
    out = []
    for a in shown:
        drawable = isinstance(a.value, (int, float)) and math.isfinite(a.value)
        out.append(
            {
                "rule": a.rule,
                "severity": a.severity,
                "step": a.step,
                "end": a.end_step,
                "value": float(a.value) if drawable and a.metric in on_axis else None,
                "message": f"{a.rule}: {a.message}",
                "color": charts.rule_color(a.rule),
                "marker": charts.SEVERITY_COLORS.get(a.severity, "#888888"),
            }
        )
    return out


def _panel(
    series: list[dict[str, Any]],
    *,
    y_label: str,
    log: bool,
    alerts: Iterable[Alert] = (),
    title: str | None = None,
    band: charts.KLBand | None = None,
) -> dict[str, Any]:
    alerts = list(alerts)
    return {
        "title": title,
        "y_label": y_label,
        "log": log,
        "series": series,
        "band": None
        if band is None
        else {"low": band.low, "high": band.high, "target": band.target, "label": band.label},
        "alerts": _alerts(alerts, [s["key"] for s in series]),
        "lanes": [
            {"rule": rule, "color": charts.rule_color(rule)} for rule in charts.alert_lanes(alerts)
        ],
    }


def run_spec(view: RunView, options: charts.ChartOptions, extra: Sequence[str] = ()) -> Spec:
    """The run page's charts: KL (band, target, every alert), β (or why there is none),
    reward, one chart per Health signal logged, and the picked other series."""
    columns = view.data.columns
    meaning = view.meaning
    log = options.log_y
    kl_series = [_series("kl_mean")] + ([_series("kl_max")] if "kl_max" in columns else [])
    chart_list: list[dict[str, Any]] = [
        {
            "id": "kl",
            "title": charts.kl_title(meaning),
            "width": "full",
            "panels": [
                _panel(
                    kl_series,
                    y_label="KL",
                    log=log,
                    alerts=view.alerts,
                    band=charts.kl_band(view.thresholds),
                )
            ],
        }
    ]
    has_beta = "beta" in columns or meaning.beta is not None
    if has_beta:
        chart_list.append(
            {
                "id": "beta",
                "title": "β (KL coefficient)",
                "width": "half",
                "panels": [_panel([_series("beta")], y_label="β", log=log)],
            }
        )
    total_label = None if "reward_total" in columns else "reward_total (score − β·KL, computed)"
    chart_list.append(
        {
            "id": "reward",
            "title": "Reward",
            "width": "half",
            # Rewards go negative: a log axis would hide them, so this chart is always linear.
            "panels": [
                _panel(
                    [_series("reward_mean"), _series(COMPUTED_TOTAL, label=total_label)],
                    y_label="reward",
                    log=False,
                )
            ],
        }
    )
    palette = charts.series_palette()
    for chart in view.health.charts:
        panels = []
        families = charts.series_families(list(chart.series))
        for family, names in families.items():
            panel_log = log and not any(n in charts.LINEAR_HEALTH_SERIES for n in names)
            panels.append(
                _panel(
                    [_series(n, next(palette)) for n in names],
                    y_label=family,
                    log=panel_log,
                    alerts=[a for a in view.alerts if a.metric in names],
                    title=family if len(families) > 1 else None,
                )
            )
        chart_list.append(
            {
                "id": charts.health_figure_name(chart),
                "title": chart.title,
                "width": "third",
                "group": "Health",
                "panels": panels,
            }
        )
    picked = [name for name in extra if name in columns]
    if picked:
        chart_list.append(
            {
                "id": "extra",
                "title": "Other series",
                "width": "full",
                "panels": [
                    _panel([_series(n, next(palette))], y_label=n, log=log, title=n) for n in picked
                ],
            }
        )
    keys = [s["key"] for c in chart_list for p in c["panels"] for s in p["series"]]
    return {
        "charts": chart_list,
        "series": list(dict.fromkeys(keys)),
        "beta_missing": None if has_beta else views.beta_missing(view.meaning),
        "smoothing": options.smoothing,
        "log_y": log,
    }


def compare_spec(shown: Sequence[RunView], metric: str, options: charts.ChartOptions) -> Spec:
    """The compare page's chart: each run's `metric`, in a neutral colour (charts'
    COMPARE_COLORS: no red or green) and named with its health ("runs/a · critical"), as
    charts.compare_figure draws it. Series carry their run's index among the page's sources."""
    series = [
        {
            "key": metric,
            "source": i,
            "label": charts.compare_name(v.run_id, views.health_badge(v)),
            "color": charts.COMPARE_COLORS[i % len(charts.COMPARE_COLORS)],
        }
        for i, v in enumerate(shown)
    ]
    chart = {
        "id": "compare",
        "title": f"{metric} by run",
        "width": "full",
        "panels": [_panel(series, y_label=metric, log=options.log_y)],
    }
    return {
        "charts": [chart],
        "series": [metric],
        "beta_missing": None,
        "smoothing": options.smoothing,
        "log_y": options.log_y,
    }
