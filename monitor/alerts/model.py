"""What the engine reports: `Alert` episodes, their severities, and the log detectors write to."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from monitor.alerts.config import RULE_IDS

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str  # info | warning | critical
    step: int  # first step of the episode
    end_step: int | None  # step where it cleared; None while active
    metric: str
    value: float
    message: str

    @property
    def active(self) -> bool:
        return self.end_step is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a non-finite value becomes None (JSON has no NaN)."""
        value = self.value if math.isfinite(self.value) else None
        return {
            "rule": self.rule,
            "severity": self.severity,
            "step": self.step,
            "end_step": self.end_step,
            "metric": self.metric,
            "value": value,
            "message": self.message,
        }


def alert_order(alert: Alert) -> tuple[int, int]:
    """By first step, then rule: the same order however the rows were batched."""
    return alert.step, RULE_IDS.index(alert.rule)


def worst_severity(alerts: list[Alert]) -> str | None:
    if not alerts:
        return None
    return max((a.severity for a in alerts), key=SEVERITY_RANK.__getitem__)


class AlertLog:
    """Every episode raised from a run's rows, in the order raised; at most one open per rule."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self._open: dict[str, int] = {}  # rule -> index of its active alert

    def open(
        self, rule: str, severity: str, step: int, metric: str, value: float, message: str
    ) -> None:
        self._open[rule] = len(self.alerts)
        self.alerts.append(Alert(rule, severity, step, None, metric, value, message))

    def close(self, rule: str, end_step: int) -> None:
        index = self._open.pop(rule, None)
        if index is not None:
            self.alerts[index] = replace(self.alerts[index], end_step=end_step)

    def is_open(self, rule: str) -> bool:
        return rule in self._open
