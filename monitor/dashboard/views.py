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
from monitor.cli import add_dashboard_arguments
from monitor.dashboard.run_view import (
    LIVE_STATUSES,
    AlertTally,
    DataVersion,
    HealthRow,
    RunPulse,
    RunSummary,
    RunView,
)
from monitor.presets import KLMeaning
from monitor.run import Sample
from monitor.sources.bucket import is_url
from monitor.sources.parse import Problem

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
    roots_given: bool = True  # False: the defaults, where a missing runs/ is not a problem


def root_warnings(problems: Iterable[str], config: AppConfig) -> tuple[list[str], list[str]]:
    """(warnings, notes) for roots that serve no runs (RunStore.root_problems). A root the
    user named is a warning that names it; of the default roots, a missing one (runs/ before
    the first training run) is only a note."""
    problems = list(problems)
    if not config.roots_given:
        return [], [f"Default root {p}: nothing to show from it yet." for p in problems]
    return [f"Root {p}: no runs from it are shown (the other roots are)." for p in problems], []


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
    add_dashboard_arguments(parser, help_text=False)  # the flags `klwatch serve` passes on
    args, _ = parser.parse_known_args(list(argv))
    # os.pathsep-separated, but the colon of a bucket URL (s3://…) does not separate
    separator = r":(?!//)" if os.pathsep == ":" else re.escape(os.pathsep)
    from_env = [p for p in re.split(separator, env.get("KLWATCH_ROOTS", "")) if p.strip()]
    roots = [*args.root, *from_env] or list(defaults)
    unique = tuple(dict.fromkeys(r if is_url(r) else os.path.abspath(r) for r in roots))
    poll = args.poll or env.get("KLWATCH_POLL", "") not in ("", "0")
    preset = args.preset or env.get("KLWATCH_PRESET") or None
    given = bool(args.root or from_env)
    return AppConfig(unique, poll, args.follow_symlinks, preset, roots_given=given)


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
class HealthGroup:
    """One box of the banner: the active alerts of one severity, what klwatch cannot see,
    or what fired and cleared. Each alert sits in the group of its own severity."""

    level: str  # critical | warning | info | past
    title: str  # Critical | Warning | Info | Cannot see this run | Cleared
    lines: tuple[str, ...]
    active: int = 0  # active alerts in the group (0: not a group of active alerts)

    @property
    def heading(self) -> str:
        return f"{self.title} ({self.active} active)" if self.active else self.title


@dataclass(frozen=True)
class Health:
    level: str  # healthy | past | warning | critical
    headline: str
    details: list[str]
    groups: tuple[HealthGroup, ...] = ()
    tally: str = ""  # "1 critical · 2 warnings · 1 cleared"


def tally_text(tally: AlertTally) -> str:
    """Alerts counted by their own severity: "1 critical · 2 warnings · 1 cleared" ("" for
    none). Never a total labelled with the worst severity."""
    parts = []
    if tally.critical:
        parts.append(f"{tally.critical} critical")
    if tally.warning:
        parts.append(f"{tally.warning} warning" + ("s" if tally.warning != 1 else ""))
    if tally.info:
        parts.append(f"{tally.info} info")
    if tally.cleared:
        parts.append(f"{tally.cleared} cleared")
    return " · ".join(parts)


def blind_reasons(rows: int | None, skipped: int, read_error: str | None) -> list[str]:
    """What klwatch cannot see of a run, in words: its files cannot be read, or it has
    damaged lines and not one readable record. Such a run is never called healthy."""
    reasons = []
    if read_error:
        reasons.append(f"Cannot read this run: {read_error}")
    if rows == 0 and skipped > 0:
        lines = f"{skipped:,} line" + ("s" if skipped != 1 else "")
        reasons.append(f"No readable record: {lines} skipped (see the Problems tab)")
    return reasons


def unreadable(summary: RunSummary) -> bool:
    """A sidebar entry klwatch is blind to: damaged lines and not one readable row."""
    return summary.rows == 0 and (summary.skipped or 0) > 0


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


def health(
    alerts: Iterable[Alert],
    *,
    rows: int | None = None,
    skipped: int = 0,
    read_error: str | None = None,
) -> Health:
    """The banner, for the whole run: the active alerts grouped by their own severity
    (a "Critical" group, a "Warning" group, …), what klwatch cannot see, then what fired
    and cleared.

    "Healthy" only when nothing ever fired and klwatch can see the run: never with an
    active warning or critical alert, never while its files cannot be read or every line
    is damaged (`rows`, `skipped`, `read_error`). Info
    alerts alone leave a run healthy-looking (level "past") but are still listed.
    """
    alerts = list(alerts)
    active = active_alerts(alerts)
    by_severity = {s: [a for a in active if a.severity == s] for s in SEVERITY_TITLES}
    urgent = bool(by_severity["critical"] or by_severity["warning"])
    # A read error is always said; "no readable record" only when no warning says it already
    # (the records_unreadable rule, when it runs, is the more specific news).
    blind = (
        blind_reasons(rows, skipped, read_error)
        if not urgent
        else blind_reasons(None, 0, read_error)
    )
    history = history_lines(alerts)
    details = [f"Active: {a.rule} since step {a.step} — {a.message}" for a in active]
    details += history + blind
    groups = [
        HealthGroup(severity, title, tuple(alert_line(a) for a in group), len(group))
        for severity, title in SEVERITY_TITLES.items()
        if (group := by_severity[severity])
    ]
    if blind:  # after the alerts of its own level: an alert is the more specific news
        at = sum(1 for g in groups if g.level in ("critical", "warning"))
        groups.insert(at, HealthGroup("warning", "Cannot see this run", tuple(blind)))
    if history:
        groups.append(HealthGroup("past", "Cleared", tuple(history)))
    tally = tally_text(AlertTally.of(alerts))
    named = [
        f"{title}: {_rule_list(group)}"
        for severity, title in SEVERITY_TITLES.items()
        if severity != "info" and (group := by_severity[severity])
    ]
    if named:
        level = "critical" if by_severity["critical"] else "warning"
        return Health(level, " · ".join(named), details, tuple(groups), tally)
    if blind:
        return Health("warning", f"Warning: {blind[0]}", details, tuple(groups), tally)
    if active:
        headline = f"No warnings active (notes: {_rule_list(active)})"
        return Health("past", headline, details, tuple(groups), tally)
    if history:
        headline = "No active alerts — but alerts fired earlier in this run"
        return Health("past", headline, details, tuple(groups), tally)
    return Health("healthy", "Healthy: no alert has fired in this run", [])


# The banner's groups, worst first: each alert is listed under its own severity.
SEVERITY_TITLES = {"critical": "Critical", "warning": "Warning", "info": "Info"}


def run_health(view: RunView) -> Health:
    """`health` for a run view: its alerts, and whether klwatch can see it at all."""
    return health(
        view.alerts,
        rows=view.data.n_rows,
        skipped=view.skipped,
        read_error=view.read_error,
    )


def alert_line(alert: Alert) -> str:
    """One active alert as the banner (and the live charts' news) says it."""
    return f"{alert.rule} since step {alert.step} — {alert.message}"


def health_badge(view: RunView) -> str:
    """A run's health in a word, for a legend or a table (the compare page marks health this
    way, never by a line's colour)."""
    verdict = run_health(view)
    return {"critical": "critical", "warning": "warning"}.get(verdict.level, "no warnings")


def landing_run(summaries: Iterable[RunSummary]) -> str | None:
    """The run a page without `?run=` opens: the one that most needs attention — an active
    critical alert, then an active warning (or a run klwatch cannot read), then the most
    recently written live run, then the most recently written run. Ties go to a live run,
    then to the most recent write."""

    def attention(s: RunSummary) -> int:
        if s.tally is not None:
            worst = 2 if s.tally.critical else 1 if s.tally.warning else 0
        else:
            worst = SEVERITY_RANK.get(s.worst_severity or "info", 0) if s.alert_count else 0
        return max(worst, 1 if unreadable(s) else 0)

    def key(s: RunSummary) -> tuple[int, bool, float]:
        return attention(s), s.status in LIVE_STATUSES, s.last_write or 0.0

    best = max(summaries, key=key, default=None)
    return best.run_id if best is not None else None


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


ALERT_COLUMNS = ["severity", "rule", "step", "end step", "metric", "value", "message"]
OPEN_END = "active"  # the end of an alert that has not cleared


def alerts_frame(alerts: Iterable[Alert]) -> pd.DataFrame:
    """The alerts table: active first, then worst, then most recent. An open end reads
    "active"; messages are whole (the page shows them wrapped, never cut)."""
    rows = [
        {
            "severity": a.severity,
            "rule": a.rule,
            "step": int(a.step),
            "end step": OPEN_END if a.end_step is None else f"{int(a.end_step)}",
            "metric": a.metric,
            "value": _value_text(a.value),
            "message": a.message,
            "_active": a.end_step is None,
            "_rank": SEVERITY_RANK.get(a.severity, 0),
        }
        for a in alerts
    ]
    frame = pd.DataFrame(rows, columns=[*ALERT_COLUMNS, "_active", "_rank"])
    order = frame.sort_values(["_active", "_rank", "step"], ascending=[False, False, False])
    return order.drop(columns=["_active", "_rank"]).reset_index(drop=True)


def _value_text(value: object) -> str:
    """An alert's value as the table shows it (NaN and ±inf spelled out, not blank)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return f"{value:.4g}"


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A table whose text cells st.table shows literally (it renders cells as markdown)."""
    return frame.apply(
        lambda column: (
            column if pd.api.types.is_numeric_dtype(column) else column.map(escape_markdown)
        )
    )


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
                "health": health_badge(view),
                "status": view.status,
                "last step": view.data.last_step,
                "lines skipped": view.skipped,
                "alerts": tally_text(AlertTally.of(view.alerts)),
                "active rules": ", ".join(f"{a.rule} ({a.severity})" for a in active),
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


SidebarKey = tuple[
    tuple[str, str, int | None, int | None, str | None, AlertTally | None, bool], ...
]


def sidebar_key(summaries: Iterable[RunSummary]) -> SidebarKey:
    """What must redraw the sidebar when it changes: status and alerts of every run, and
    whether klwatch can read it (not the last step or the age, which change all the time
    and are refreshed with the page)."""
    return tuple(
        (s.run_id, s.status, s.alert_count, s.past_count, s.worst_severity, s.tally, unreadable(s))
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
    if summary.tally is not None:
        alerts = tally_text(summary.tally)
        if alerts:
            parts.append(alerts)
    else:  # not checked by severity yet: say how many are active, not how severe each is
        if summary.alert_count:
            parts.append(f"{summary.alert_count} active")
        if summary.past_count:
            parts.append(f"{summary.past_count} cleared")
    if summary.skipped:
        parts.append(
            f"{summary.skipped:,} line" + ("s" if summary.skipped != 1 else "") + " skipped"
        )
    if unreadable(summary):
        parts.append("no readable record")
    elif summary.problem:
        parts.append("unreadable" if summary.rows is None else "problems")
    return " · ".join(parts)


def run_header(view: RunView) -> str:
    """The line under a run's name: id, status, rows and last step, and the damaged lines
    skipped (said wherever rows are counted: rows alone would hide what was not read)."""
    data = view.data
    parts = [view.run_id, view.status, f"{data.n_rows:,} steps"]
    if data.last_step is not None:
        parts.append(f"last step {data.last_step:,}")
    if view.skipped:
        parts.append(f"{view.skipped:,} line" + ("s" if view.skipped != 1 else "") + " skipped")
    return " · ".join(parts)


def run_caption(summary: RunSummary, now: float | None = None) -> str:
    """`run_details` as safe markdown, with a coloured status dot, the source format's badge
    and an alert marker."""
    dot = f":{STATUS_COLORS.get(summary.status, 'gray')}[●]"
    text = escape_markdown(run_details(summary, now))
    text = f":{summary.badge}-badge[{escape_markdown(summary.source)}] {text}"
    if summary.alert_count:
        color = SEVERITY_COLORS.get(summary.worst_severity or "info", "blue")
        text += f" :{color}[▲]"
    elif unreadable(summary):
        text += f" :{SEVERITY_COLORS['warning']}[▲]"  # blind is never green
    return f"{dot} {text}"


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
    if view.live_note:
        lines.append(view.live_note)
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
RenderKey = tuple[DataVersion, tuple[int, int, str | None, str, AlertTally]]


def render_key(pulse: RunPulse) -> RenderKey:
    """What a viewer compares to know whether to redraw, in two parts: (the run's content
    version — new rows, rewrites, run.json, read errors; what a person must see at once — its
    alert tallies and its status, stalled coming from the clock alone)."""
    return (
        pulse.version,
        (pulse.alert_count, pulse.past_count, pulse.worst_severity, pulse.status, pulse.tally),
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
