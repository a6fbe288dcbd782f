"""klwatch monitor: the run-log contract, incremental readers, the run store and alerts.

Importable without torch or streamlit (a dashboard server needs neither to read runs).
"""

from monitor.alerts import Alert, AlertEngine
from monitor.alerts.config import AlertConfig, RulesError
from monitor.monitored import MonitoredRun, check_run
from monitor.run import Run, load_run, open_run
from monitor.runlog import REQUIRED_KEYS, SCHEMA_VERSION, RunLogError, RunWriter
from monitor.sources.parse import Problem

__all__ = [
    "REQUIRED_KEYS",
    "SCHEMA_VERSION",
    "Alert",
    "AlertConfig",
    "AlertEngine",
    "MonitoredRun",
    "Problem",
    "RulesError",
    "Run",
    "RunLogError",
    "RunWriter",
    "check_run",
    "load_run",
    "open_run",
]
