"""Alerts: streaming detectors over a run's rows → `Alert` episodes (docs/alerts.md).

- engine.py: AlertEngine, which feeds new rows to every registered detector;
- registry.py: the detector of each rule id (judged on rows, blocks or the wall clock);
- detector.py: what a detector sees (Rows, Blocks) and returns (Verdict, BlockRule);
- model.py: Alert, severities, the log of episodes detectors open and close;
- thresholds.py: one run's band, growth level and β bounds (the numbers: monitor/alerts/config.py);
- one module per rule family: nonfinite, spikes, band (kl_high, kl_low, kl_negative),
  growth, controller (beta_saturated), reward (reward_hacking), leash (no_kl_penalty,
  kl_missing), stall (run_stalled).
"""

from monitor.alerts.engine import AlertEngine
from monitor.alerts.model import SEVERITY_RANK, Alert, worst_severity
from monitor.alerts.thresholds import Thresholds, resolve_thresholds

__all__ = [
    "SEVERITY_RANK",
    "Alert",
    "AlertEngine",
    "Thresholds",
    "resolve_thresholds",
    "worst_severity",
]
