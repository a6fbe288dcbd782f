"""View logic for the dashboard that is worth testing without a browser: roots from the
command line, URL state, run lookup, the health verdict, tables and labels.

No Streamlit here either: app.py is layout only and calls these.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from monitor.alerts import SEVERITY_RANK, Alert
from monitor.parse import Problem
from monitor.presets import KLMeaning
from monitor.run import Sample
from monitor.run_view import DataVersion, HealthRow, RunPulse, RunSummary, RunView

# Colours via Streamlit's markdown (:green[…]) rather than emoji: a team screen or a
# headless browser without an emoji font still shows them.
STATUS_COLORS = {
    "running": "green",
    "finished": "gray",
    "failed": "red",
    "stalled": "orange",
    "unknown": "gray",
}
SEVERITY_COLORS = {"info": "blue", "warning": "orange", "critical": "red"}
SMOOTHING_MAX = 0.99  # TensorBoard's slider stops short of 1 (weight 1 = a flat line)
MAX_URL_RUNS = 8  # a compare view of more runs than this is unreadable anyway


# -- roots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppConfig:
    roots: tuple[str, ...]
    poll: bool = False
    follow_symlinks: bool = False  # only for roots whose writers you trust (docs/deploy.md)
    preset: str | None = None  # force a names preset on every run (docs/integrations.md)


def default_roots(app_dir: Path) -> tuple[str, ...]:
    return (str(app_dir / "sample_runs"), str(app_dir / "runs"))


def parse_app_args(
    argv: Sequence[str], env: Mapping[str, str], defaults: Sequence[str]
) -> AppConfig:
    """Roots from `--root DIR` (repeatable) and KLWATCH_ROOTS (os.pathsep-separated).

    Given roots replace the defaults (sample_runs/ and runs/), so pointing the dashboard at
    one share shows that share only. Unknown arguments are ignored: Streamlit may pass its
    own through.
    """
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--root", action="append", default=[])
    parser.add_argument("--poll", action="store_true")
    parser.add_argument("--follow-symlinks", action="store_true")
    parser.add_argument("--preset")
    args, _ = parser.parse_known_args(list(argv))
    from_env = [p for p in env.get("KLWATCH_ROOTS", "").split(os.pathsep) if p.strip()]
    roots = [*args.root, *from_env] or list(defaults)
    unique = tuple(dict.fromkeys(os.path.abspath(r) for r in roots))
    poll = args.poll or env.get("KLWATCH_POLL", "") not in ("", "0")
    preset = args.preset or env.get("KLWATCH_PRESET") or None
    return AppConfig(unique, poll, args.follow_symlinks, preset)


# -- URL state -----------------------------------------------------------------------------


@dataclass
class ViewState:
    """What a shared link reproduces: the runs, the series and the chart options."""

    runs: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)  # extra series on the run page
    metric: str = "kl_mean"  # the compared series
    log_y: bool = False
    smoothing: float = 0.0


def view_from_query(get_all: Callable[[str], list[str]]) -> ViewState:
    """Read the URL (`?run=A&run=B&series=entropy&log=1&smooth=0.6&metric=kl_max`).

    Values are only parsed here; run names are checked against discovered runs later.
    """
    runs = list(dict.fromkeys(r for r in get_all("run") if r))[:MAX_URL_RUNS]
    series = list(dict.fromkeys(s for s in get_all("series") if s))
    metric = next(iter(get_all("metric")), "kl_mean") or "kl_mean"
    log_y = next(iter(get_all("log")), "0") in ("1", "true", "yes")
    return ViewState(runs, series, metric, log_y, _parse_smoothing(get_all("smooth")))


def _parse_smoothing(values: list[str]) -> float:
    try:
        value = float(values[0]) if values else 0.0
    except ValueError:
        return 0.0
    return min(max(value, 0.0), SMOOTHING_MAX) if math.isfinite(value) else 0.0


def view_to_query(view: ViewState) -> dict[str, str | list[str]]:
    """The URL parameters for `view`; defaults are left out so links stay short."""
    params: dict[str, str | list[str]] = {}
    if view.runs:
        params["run"] = list(view.runs)
    if view.series:
        params["series"] = list(view.series)
    if len(view.runs) > 1 and view.metric != "kl_mean":
        params["metric"] = view.metric
    if view.log_y:
        params["log"] = "1"
    if view.smoothing > 0:
        params["smooth"] = f"{view.smoothing:g}"
    return params


# -- run lookup ----------------------------------------------------------------------------


def resolve_runs(
    requested: Iterable[str], run_ids: Sequence[str], names: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(found run ids, names not found). Only ever compares strings with discovered runs:
    a URL value is never joined onto a path. Matches the run id, else a unique run name
    from run.json or a unique last path component (so `?run=adaptive-kl` works)."""
    known = set(run_ids)
    found: list[str] = []
    missing: list[str] = []
    for wanted in requested:
        match = wanted if wanted in known else _unique_alias(wanted, run_ids, names or {})
        if match is None:
            missing.append(wanted)
        elif match not in found:
            found.append(match)
    return found, missing


def _unique_alias(wanted: str, run_ids: Sequence[str], names: Mapping[str, str]) -> str | None:
    hits = [rid for rid in run_ids if names.get(rid) == wanted or rid.rsplit("/", 1)[-1] == wanted]
    return hits[0] if len(hits) == 1 else None


SIDEBAR_LIMIT = 100  # a radio of 1,000 runs costs ~0.5 s per rerun; the filter finds the rest


def limit_runs(
    run_ids: Sequence[str], last_write: Mapping[str, float | None], limit: int = SIDEBAR_LIMIT
) -> list[str]:
    """At most `limit` runs, the most recently written ones, kept in their given order (a
    stable order keeps the radio's selection stable while runs grow)."""
    if len(run_ids) <= limit:
        return list(run_ids)
    recent = sorted(run_ids, key=lambda rid: last_write.get(rid) or 0.0, reverse=True)[:limit]
    keep = set(recent)
    return [rid for rid in run_ids if rid in keep]


def filter_runs(run_ids: Sequence[str], names: Mapping[str, str], text: str) -> list[str]:
    """Runs whose id or name contains every word of `text` (case-insensitive)."""
    words = text.lower().split()
    if not words:
        return list(run_ids)
    return [
        rid
        for rid in run_ids
        if all(w in rid.lower() or w in names.get(rid, "").lower() for w in words)
    ]


# -- health --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    level: str  # healthy | warning | critical
    headline: str
    details: list[str]


def active_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """Active alerts (end_step None), worst first, each once."""
    seen: set[tuple[str, str, int]] = set()
    active = []
    for alert in alerts:
        key = (alert.rule, alert.metric, alert.step)
        if alert.end_step is None and key not in seen:
            seen.add(key)
            active.append(alert)
    return sorted(active, key=lambda a: (-SEVERITY_RANK.get(a.severity, 0), -a.step))


def health(alerts: Iterable[Alert], engine_ready: bool = True) -> Health:
    """The banner, for the whole run: active alerts first, then what fired and cleared.

    "Healthy" only when nothing ever fired. Info alerts alone leave a run healthy-looking
    (level "past"/"healthy") but are still listed: they are worth reading, not acting on.
    """
    alerts = list(alerts)
    active = active_alerts(alerts)
    worst = max((SEVERITY_RANK.get(a.severity, 0) for a in active), default=0)
    details = [f"Active: {a.rule} since step {a.step} — {a.message}" for a in active]
    details += history_lines(alerts)
    if worst >= SEVERITY_RANK["critical"]:
        return Health("critical", f"Critical: {_rule_list(active)}", details)
    if worst >= SEVERITY_RANK["warning"]:
        return Health("warning", f"Warning: {_rule_list(active)}", details)
    if not engine_ready:
        return Health("healthy", "No alert engine available: alerts are not checked", [])
    if active:
        return Health("past", f"No warnings active (notes: {_rule_list(active)})", details)
    if details:
        return Health("past", "No active alerts — but alerts fired earlier in this run", details)
    return Health("healthy", "Healthy: no alert has fired in this run", [])


def history_lines(alerts: Iterable[Alert]) -> list[str]:
    """Cleared alerts in words, one line per rule: "4 × kl_spike at steps 412, 977, 1603,
    2290 — cleared"."""
    by_rule: dict[str, list[Alert]] = {}
    for a in alerts:
        if a.end_step is not None:
            by_rule.setdefault(a.rule, []).append(a)
    lines = []
    for rule, episodes in sorted(by_rule.items(), key=lambda kv: min(a.step for a in kv[1])):
        steps = sorted(int(a.step) for a in episodes)
        shown = ", ".join(str(s) for s in steps[:8]) + (" …" if len(steps) > 8 else "")
        where = f"at step {shown}" if len(steps) == 1 else f"at steps {shown}"
        lines.append(f"{len(steps)} × {rule} {where} — cleared")
    return lines


def _rule_list(alerts: Sequence[Alert]) -> str:
    rules = list(dict.fromkeys(a.rule for a in alerts))
    return ", ".join(rules[:5]) + (f" and {len(rules) - 5} more" if len(rules) > 5 else "")


ALERT_COLUMNS = ["active", "severity", "rule", "step", "end_step", "metric", "value", "message"]


def alerts_frame(alerts: Iterable[Alert]) -> pd.DataFrame:
    """The alerts table: active first, then worst, then most recent."""
    rows = [
        {
            "active": a.end_step is None,
            "severity": a.severity,
            "rule": a.rule,
            "step": int(a.step),
            "end_step": None if a.end_step is None else int(a.end_step),
            "metric": a.metric,
            "value": float(a.value) if isinstance(a.value, (int, float)) else math.nan,
            "message": a.message,
        }
        for a in alerts
    ]
    frame = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    if frame.empty:
        return frame
    frame["end_step"] = frame["end_step"].astype("Int64")
    rank = frame["severity"].map(SEVERITY_RANK).fillna(0)
    order = frame.assign(_rank=rank).sort_values(
        ["active", "_rank", "step"], ascending=[False, False, False]
    )
    return order.drop(columns="_rank").reset_index(drop=True)


def samples_frame(samples: Sequence[Sample]) -> pd.DataFrame:
    """Latest samples, newest first; every value as text (a sample is untrusted text)."""
    if not samples:
        return pd.DataFrame()
    rows = [{k: _cell(v) for k, v in s.items() if k != "time"} for s in reversed(samples)]
    return pd.DataFrame(rows)


def _cell(value: object) -> int | float | str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return value if isinstance(value, str) else str(value)


def compare_frame(runs: Iterable[RunView]) -> pd.DataFrame:
    """The compare page's table: one row per run, its status and active alerts."""
    rows = []
    for view in runs:
        active = active_alerts(view.alerts)
        rows.append(
            {
                "run": view.run_id,
                "status": view.status,
                "last step": view.data.last_step,
                "active alerts": len(active),
                "worst": active[0].severity if active else "",
                "rules": ", ".join(dict.fromkeys(a.rule for a in active)),
            }
        )
    return pd.DataFrame(rows)


def problems_frame(problems: Iterable[Problem]) -> pd.DataFrame:
    rows = [{"file": p.file, "line": p.line, "problem": p.reason} for p in problems]
    return pd.DataFrame(rows, columns=["file", "line", "problem"])


# -- labels --------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=^&\"'])")


def escape_markdown(text: object) -> str:
    """Text that Streamlit's markdown shows literally: every ASCII punctuation character
    that markdown (or Streamlit's :color[] / :icon: syntax, or HTML) could act on is
    backslash-escaped, and line breaks become spaces (a run name is one line)."""
    flat = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


SidebarKey = tuple[tuple[str, str, int | None, int | None, str | None], ...]


def sidebar_key(summaries: Iterable[RunSummary]) -> SidebarKey:
    """What must redraw the sidebar when it changes: status and alerts of every run (not
    the last step or the age, which change all the time and are refreshed with the page)."""
    return tuple(
        (s.run_id, s.status, s.alert_count, s.past_count, s.worst_severity)
        for s in sorted(summaries, key=lambda s: s.run_id)
    )


def any_running(pulses: Sequence[RunPulse | None]) -> bool:
    """True if a shown run may still be written (running or stalled), or is not loaded yet
    (None), or no run is shown."""
    return not pulses or any(p is None or p.live for p in pulses)


def live_state(paused: bool, statuses: Sequence[str | None]) -> str:
    """The live indicator: a finished run is not "live", however often the page checks."""
    if paused:
        return ":gray[❚❚] paused"
    if statuses and not any(s in ("running", "stalled") for s in statuses):
        return ":gray[■] not running"
    return ":red[●] live"


def format_age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def run_title(summary: RunSummary) -> str:
    """The run's stable sidebar label: its id, plus its run.json name when that differs."""
    title = summary.run_id
    if summary.name and summary.name != summary.run_id.rsplit("/", 1)[-1]:
        title += f" ({summary.name})"
    return title


def run_details(summary: RunSummary, now: float | None = None) -> str:
    """The live part of a sidebar entry: status, last step, age of the last write, alerts.

    Plain text; `run_caption` is the markdown version.
    """
    now = time.time() if now is None else now
    parts = [summary.status]
    parts.append("no steps" if summary.last_step is None else f"step {summary.last_step:,}")
    age = None if summary.last_write is None else now - summary.last_write
    parts.append(f"{format_age(age)} ago" if age is not None else "never written")
    if summary.alert_count:
        parts.append(f"{summary.alert_count} active {summary.worst_severity or 'info'}")
    if summary.past_count:
        parts.append(f"{summary.past_count} cleared")
    if summary.problem:
        parts.append("unreadable" if summary.rows is None else "problems")
    return " · ".join(parts)


def run_caption(summary: RunSummary, now: float | None = None) -> str:
    """`run_details` as safe markdown, with a coloured status dot, the source format's badge
    and an alert marker."""
    dot = f":{STATUS_COLORS.get(summary.status, 'gray')}[●]"
    text = escape_markdown(run_details(summary, now))
    badge = SOURCE_BADGES.get(summary.source, "gray")
    text = f":{badge}-badge[{escape_markdown(summary.source)}] {text}"
    if summary.alert_count:
        color = SEVERITY_COLORS.get(summary.worst_severity or "info", "blue")
        text += f" :{color}[▲]"
    return f"{dot} {text}"


SOURCE_BADGES = {
    "klwatch": "gray",
    "TensorBoard": "orange",
    "verl": "blue",
    "trackio": "violet",
    "trainer_state.json": "green",
}


def source_lines(view: RunView) -> list[str]:
    """What the page says about where a run's numbers come from and what its KL means —
    including what the trainer does not log, instead of guessing it."""
    meaning, label = view.meaning, view.format_label
    if not meaning.preset:
        return [
            f"Source: {label}. None of the known trainers' names found: pick one with "
            "--preset or map the names in a preset file (docs/integrations.md)."
        ]
    how = "detected from the logged names" if meaning.detected else "chosen"
    lines = [f"Source: {label} · {meaning.trainer} (preset {meaning.preset}, {how})."]
    if meaning.kl_found:
        estimator = f", estimator {meaning.estimator}" if meaning.estimator else ""
        lines.append(f"KL = {meaning.mapping['kl_mean']}: {meaning.unit_label}{estimator}.")
    lines.extend(meaning.notes)
    band_off = view.thresholds.band_off if view.thresholds is not None else None
    if band_off:
        lines.append(band_off[0].upper() + band_off[1:] + ".")
    return lines


def health_not_logged(row: HealthRow) -> str | None:
    """The caption under the Health row: the health signals this run does not log (said,
    never alerted: their rules are not judged). None when it logs them all."""
    if not row.missing:
        return None
    return "Not logged: " + ", ".join(chart.label for chart in row.missing)


def beta_missing(meaning: KLMeaning) -> str:
    trainer = meaning.trainer if meaning.preset else "this trainer"
    return f"β is not logged by {trainer} and not found in its config: no β chart."


# (the run's content version, what a person must see at once)
RenderKey = tuple[DataVersion, tuple[int, int, str | None, str]]


def render_key(pulse: RunPulse) -> RenderKey:
    """What a viewer compares to know whether to redraw, in two parts: (the run's content
    version — new rows, rewrites, run.json, read errors; what a person must see at once — its
    alert tallies and its status, stalled coming from the clock alone)."""
    return (
        pulse.version,
        (pulse.alert_count, pulse.past_count, pulse.worst_severity, pulse.status),
    )


def redraw_due(
    old: Mapping[str, RenderKey] | None,
    new: Mapping[str, RenderKey],
    seconds_since_redraw: float,
    data_redraw_s: float,
) -> bool:
    """Redraw at once when an alert or a status changed (or runs came or went); when only
    new rows arrived, at most every `data_redraw_s`: a run written at 10 Hz must not make
    every viewer rebuild and re-send its page twice a second."""
    if old is None or set(old) != set(new):
        return True
    if any(old[rid][1] != new[rid][1] for rid in new):
        return True
    data_changed = any(old[rid][0] != new[rid][0] for rid in new)
    return data_changed and seconds_since_redraw >= data_redraw_s
