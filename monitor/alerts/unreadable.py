"""records_unreadable, alert_config_invalid: what klwatch cannot see is itself an alert on the
run, never a green page — records it cannot read (no readable record at all, the newest
records mostly damaged, the metrics file not openable) and a per-run `alerts` override it
cannot apply (the run is then watched with the defaults)."""

from __future__ import annotations

from dataclasses import replace

from monitor.alerts.detector import RunFacts
from monitor.alerts.model import Alert
from monitor.run import Run


def records_unreadable(facts: RunFacts, _now: float, current: Alert | None) -> Alert | None:
    """Active while the run's data cannot be read, has no readable record, or more than
    `damaged_share` of its newest lines are damaged; clears when readable rows resume."""
    cfg = facts.config.records_unreadable
    problem = _unreadable(facts.run, cfg.damaged_share) if cfg.enabled else None
    return _episode(
        "records_unreadable", cfg.severity, facts.run, problem, current, "records_skipped"
    )


def alert_config_invalid(facts: RunFacts, _now: float, current: Alert | None) -> Alert | None:
    """Active while run.json's `alerts` override cannot be applied (it names the key)."""
    cfg = facts.config.alert_config_invalid
    problem = None
    if cfg.enabled and facts.config_problem:
        problem = (
            f"{facts.config_problem} — this run is watched with the default thresholds "
            "until the override is fixed.",
            float("nan"),
        )
    return _episode("alert_config_invalid", cfg.severity, facts.run, problem, current, "config")


def _unreadable(run: Run, damaged_share: float) -> tuple[str, float] | None:
    """(message, records skipped) when klwatch is blind to the run, else None."""
    where = run.first_bad.file if run.first_bad is not None else run.data_label
    if run.read_error:
        return (
            f"klwatch cannot read this run: {run.read_error} — check the file's permissions "
            "and that its disk or share is mounted; alerts say nothing until it can.",
            float(run.skipped),
        )
    first = f"; the first: {run.first_bad}" if run.first_bad is not None else ""
    if run.n_rows == 0 and run.skipped > 0:
        return (
            f"None of the records in {where} could be read ({run.skipped} skipped{first}). "
            "klwatch sees no step of this run — check the writer (one JSON object per line "
            "with an integer step, UTF-8) and the file's encoding.",
            float(run.skipped),
        )
    damaged, lines = run.recent_damage()
    if lines and damaged > damaged_share * lines:
        return (
            f"{damaged} of the last {lines} lines of {where} are damaged "
            f"({run.skipped} skipped in all{first}): klwatch is blind to the newest "
            "steps — check the trainer's writer (a full disk, two writers on one file, a "
            "logger printing into it).",
            float(run.skipped),
        )
    return None


def _episode(
    rule: str,
    severity: str,
    run: Run,
    problem: tuple[str, float] | None,
    current: Alert | None,
    metric: str,
) -> Alert | None:
    """`current` kept, cleared (at the last step) or replaced by a new episode."""
    step = run.last_step if run.last_step is not None else 0
    if problem is None:
        if current is not None and current.active:
            return replace(current, end_step=step)
        return current
    message, value = problem
    if current is not None and current.active:
        # the same episode; its sentence follows the latest count
        return replace(current, message=message, value=value)
    return Alert(rule, severity, step, None, metric, value, message)
