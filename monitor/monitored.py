"""A run with its alert engine: the one pairing that the store, `check`, `watch` and the page
share, so a run's alerts and its status are decided the same way everywhere."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from monitor.alerts import Alert, AlertEngine, Thresholds
from monitor.alerts.config import AlertConfig
from monitor.presets import Preset
from monitor.run import Run
from monitor.sources import RunLocation


@dataclass
class MonitoredRun:
    """`refresh()` reads what was added and feeds it to the engine; `alerts()` and `status()`
    answer with the same stall settings (rules' run_stalled), so the sidebar's "stalled" and
    the run_stalled alert can never disagree."""

    run: Run
    engine: AlertEngine = field(default_factory=AlertEngine)

    @classmethod
    def open(
        cls,
        where: RunLocation | str | os.PathLike[str],
        config: AlertConfig | None = None,
        preset: Preset | str | None = None,
    ) -> MonitoredRun:
        return cls(Run(where, preset=preset), AlertEngine(config))

    def refresh(self) -> list[Alert]:
        """Read new records and return the alerts they raised. Raises OSError as
        `Run.refresh` does (the rows read before stay)."""
        self.run.refresh()
        return self.update()

    def update(self) -> list[Alert]:
        """Feed rows read since the last call to the engine (after an outside refresh). A bad
        `alerts` section in run.json is an alert on the run (alert_config_invalid)."""
        return self.engine.update(self.run)

    def alerts(self, now: float | None = None) -> list[Alert]:
        """Every alert episode so far, run_stalled brought up to date with the clock."""
        return self.engine.alerts_now(self.run, now)

    def status(self, now: float | None = None) -> str:
        cfg = self.engine.config.run_stalled
        now = time.time() if now is None else now
        return self.run.status(now, stall_factor=cfg.factor, stall_min_s=cfg.min_seconds)

    @property
    def thresholds(self) -> Thresholds | None:
        """What the KL is judged against (None before the first rows arrive)."""
        return self.engine.th


def check_run(run: Run, config: AlertConfig | None = None, now: float | None = None) -> list[Alert]:
    """Every alert of a loaded run, stall included: the one-shot path of `check`."""
    monitored = MonitoredRun(run, AlertEngine(config))
    monitored.update()
    return monitored.alerts(now)
