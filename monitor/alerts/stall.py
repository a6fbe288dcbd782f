"""run_stalled: run.json says running but nothing was written for long — judged on the wall
clock, not on rows, so the engine asks it whenever it is asked for alerts."""

from __future__ import annotations

from dataclasses import replace

from monitor.alerts.detector import RunFacts
from monitor.alerts.model import Alert


def run_stalled(facts: RunFacts, now: float, current: Alert | None) -> Alert | None:
    """The run_stalled episode at `now`: `current` (the last one, if any) kept, cleared, or a
    new one raised. Active while run.json says running and nothing was written for
    max(min_seconds, factor × the usual step interval)."""
    cfg, run = facts.config.run_stalled, facts.run
    idle = run.seconds_since_write(now)
    # The run's status is decided in one place (monitor.run.run_status), with this rule's
    # factor, so the sidebar says "stalled" exactly when this alert is active.
    status = run.status(now, stall_factor=cfg.factor, stall_min_s=cfg.min_seconds)
    if not cfg.enabled or status != "stalled" or idle is None:
        if current is not None and current.active:  # writes resumed (or the run ended)
            return replace(current, end_step=run.last_step or current.step)
        return current
    if current is not None:
        return current  # raised once per engine: a stall that cleared is not raised again
    interval = run.typical_step_interval()
    usual = f"{interval:.3g} s" if interval else "unknown"
    return Alert(
        "run_stalled",
        cfg.severity,
        run.last_step or 0,
        None,
        "time",
        float(idle),
        f"No record written for {_duration(idle)} (usual step interval {usual}) while "
        "run.json says running: check the trainer process (crash, OOM kill, hung "
        "collective, full disk).",
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
