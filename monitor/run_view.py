"""Read-only views of runs for the page: what the dashboard reads, frozen.

The store owns mutable runs that reader threads refresh while pages draw them. A page asks
the store for a `RunView` (`RunStore.view`), a `RunPulse` (`RunStore.pulse`, the live
check's cheap question) or `RunSummary`s (the sidebar), and reads nothing else: no entry,
no engine, no lock. A view's arrays are read-only and consistent with each other (one
length), and stay valid after the run grows: the table only appends past them, and copies
before it rewrites (monitor.table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from monitor.alerts import Alert, Thresholds
from monitor.parse import Problem
from monitor.presets import KLMeaning
from monitor.run import Sample, read_samples
from monitor.table import SeriesData

LIVE_STATUSES = ("running", "stalled")  # a run that may still be written
# What changes when a run's content does: table generation, rows, records skipped, metadata
# changes, the read error.
DataVersion = tuple[int, int, int, int, str | None]


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
    meaning: KLMeaning  # what the KL numbers mean (monitor.presets)
    data: SeriesData
    alerts: tuple[Alert, ...]  # every episode so far, run_stalled up to date
    thresholds: Thresholds | None  # what the KL is judged against; None before any rows
    alert_error: str | None  # why alerts cannot be computed (bad rules in run.json)
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
    def engine_ready(self) -> bool:
        return self.alert_error is None

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
    past_count: int | None = None  # alerts that fired and cleared
    declared_status: object = None  # what the run's metadata says (light summaries)
