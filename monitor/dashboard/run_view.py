"""Read-only views of runs for the page: what the dashboard reads, frozen.

The store owns mutable runs that reader threads refresh while pages draw them. A page asks
the store for a `RunView` (`RunStore.view`), a `RunPulse` (`RunStore.pulse`, the live
check's cheap question) or `RunSummary`s (the sidebar), and reads nothing else: no entry,
no engine, no lock. A view's arrays are read-only and consistent with each other (one
length), and stay valid after the run grows: the table only appends past them, and copies
before it rewrites (monitor.table).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from monitor.alerts import Alert, Thresholds
from monitor.presets import HEALTH_SERIES, KLMeaning
from monitor.run import Sample, read_samples
from monitor.sources.parse import Problem
from monitor.table import SeriesData

LIVE_STATUSES = ("running", "stalled")  # a run that may still be written
# What changes when a run's content does: table generation, rows, records skipped, metadata
# changes, the read error.
DataVersion = tuple[int, int, int, int, str | None]


@dataclass(frozen=True)
class HealthChart:
    """One chart of the page's Health row: a health signal and the series that draw it."""

    name: str  # the chart's id: entropy, grad_norm, truncated_frac, rollout_mismatch, …
    title: str  # the chart's title (short: three charts share a row)
    label: str  # the signal for people ("Not logged: rollout mismatch, …")
    series: tuple[str, ...]  # its series, in HEALTH_SERIES order (in a HealthRow: the logged)

    @property
    def short(self) -> str:
        """How `check` names it: its one series, or the signal when several draw it."""
        return self.series[0] if len(self.series) == 1 else self.label


# The Health row, in page order. The rollout chart takes whichever of the rollout engine's
# series a trainer logs (verl: probability differences, TRL: log-prob differences and IS
# ratios, OpenRLHF: a KL): each trainer logs a different family.
HEALTH_CHARTS = (
    HealthChart("entropy", "Entropy", "entropy", ("entropy",)),
    HealthChart("grad_norm", "Gradient norm", "gradient norm", ("grad_norm",)),
    HealthChart(
        "truncated_frac",
        "Truncated completions",
        "truncation",
        ("truncated_frac",),
    ),
    HealthChart(
        "rollout_mismatch",
        "Rollout mismatch",
        "rollout mismatch",
        tuple(s for s in HEALTH_SERIES if s.startswith("rollout_")),
    ),
    HealthChart(
        "zero_std_frac",
        "Zero-spread groups",
        "zero-spread fraction",
        ("zero_std_frac",),
    ),
)


@dataclass(frozen=True)
class HealthRow:
    """Which health series a run logs, which Health charts it gets and which it lacks."""

    found: tuple[str, ...]  # every health series logged, in HEALTH_SERIES order
    charts: tuple[HealthChart, ...]  # the charts drawn, each with only its logged series
    missing: tuple[HealthChart, ...]  # the charts none of whose series is logged


def health_row(series_names: Iterable[str]) -> HealthRow:
    """The one answer to "which health series does this run log": the page's Health row and
    its "Not logged" caption, and `check`'s health line, all read it. A series a run does
    not log is said to be missing, never alerted on (its rule is simply not judged)."""
    logged = set(series_names)
    charts: list[HealthChart] = []
    missing: list[HealthChart] = []
    for chart in HEALTH_CHARTS:
        present = tuple(s for s in chart.series if s in logged)
        if present:
            charts.append(replace(chart, series=present))
        else:
            missing.append(chart)
    found = tuple(s for s in HEALTH_SERIES if s in logged)
    return HealthRow(found, tuple(charts), tuple(missing))


@dataclass(frozen=True)
class AlertTally:
    """A run's alerts counted by their own severity: the sidebar's "1 critical · 2 warnings ·
    1 cleared" and the banner's groups read this, never a count labelled with the worst."""

    critical: int = 0  # active, by severity
    warning: int = 0
    info: int = 0
    cleared: int = 0  # episodes that fired and cleared, whatever their severity

    @classmethod
    def of(cls, alerts: Iterable[Alert]) -> AlertTally:
        active = {"critical": 0, "warning": 0, "info": 0}
        cleared = 0
        for alert in alerts:
            if alert.end_step is not None:
                cleared += 1
            elif alert.severity in active:
                active[alert.severity] += 1
        return cls(active["critical"], active["warning"], active["info"], cleared)

    @property
    def active(self) -> int:
        return self.critical + self.warning + self.info


@dataclass(frozen=True)
class RunPulse:
    """What a live check compares twice a second: no rows, no alerts list."""

    run_id: str
    version: DataVersion
    status: str
    alert_count: int  # active alerts
    past_count: int  # alerts that fired and cleared
    worst_severity: str | None  # of the active alerts
    seconds_since_write: float | None
    tally: AlertTally = AlertTally()  # the alerts counted by their own severity

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


@dataclass(frozen=True)
class RunView:
    """Everything the run page shows about one run, as of one moment."""

    pulse: RunPulse
    name: str
    path: Path
    format: str  # klwatch, tensorboard, verl, … (monitor.sources)
    format_label: str  # the same for people
    live_note: str | None  # how live its format can be read (W&B blocks, a bucket's poll)
    meaning: KLMeaning  # what the KL numbers mean (monitor.presets)
    data: SeriesData
    alerts: tuple[Alert, ...]  # every episode so far, run_stalled up to date
    thresholds: Thresholds | None  # what the KL is judged against; None before any rows
    info: Mapping[str, object]  # the run's metadata in run.json's shape
    problems: tuple[Problem, ...]
    skipped: int  # records skipped in total
    read_error: str | None
    slow: bool  # the last read outlasted the store's timeout (network disk?)
    samples_file: Path | None = field(default=None, repr=False)  # klwatch's samples.jsonl

    @property
    def run_id(self) -> str:
        return self.pulse.run_id

    @property
    def status(self) -> str:
        return self.pulse.status

    @property
    def health(self) -> HealthRow:
        """The health series this run logs and lacks (monitor.dashboard.run_view.health_row)."""
        return health_row(self.data.names)

    def samples(self, limit: int) -> list[Sample]:
        """The last `limit` records of samples.jsonl (klwatch runs only), oldest first."""
        return read_samples(self.samples_file, limit)


@dataclass(frozen=True)
class RunSummary:
    """What the sidebar shows for a run without holding its series."""

    run_id: str
    name: str
    status: str
    last_step: int | None
    last_write: float | None
    rows: int | None
    alert_count: int | None  # None until the run has been checked once
    worst_severity: str | None
    problem: str | None = None
    source: str = "klwatch"  # the format's label for people: klwatch, TensorBoard, …
    badge: str = "gray"  # its badge colour (monitor.sources.FORMATS)
    past_count: int | None = None  # alerts that fired and cleared
    declared_status: object = None  # what the run's metadata says (light summaries)
    tally: AlertTally | None = None  # by severity; None until the run has been checked once
    skipped: int | None = None  # records skipped (damaged lines); None until read once
    step_interval: float | None = None  # usual seconds between records (light summaries)
