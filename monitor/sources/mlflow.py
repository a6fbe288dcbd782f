"""MLflow runs: the SQLite store (`mlflow.db`, or any `*.db` holding MLflow's tables) and the
file store (`mlruns/<experiment_id>/<run_id>/`). One klwatch run per MLflow run.

The data path, one module a step (none imports mlflow):

* here: FORMAT, `locate` / `locate_file` (which runs a directory or a file holds) and
  `MlflowSource`, the reader FORMATS names: `MlflowSource(location)` picks the store;
* monitor.sources.mlflow_sqlite: the SQLite store (its runs, MlflowDbSource);
* monitor.sources.mlflow_files: the file store (run directories, meta.yaml, MlflowDirSource);
* monitor.sources.mlflow_rows: what both share (values → one row per step, params → config,
  the MlflowSource base class).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from monitor.sources.base import RunLocation, is_dir_entry, is_file_entry
from monitor.sources.mlflow_files import (
    META_FILE,
    METRICS_DIR,
    MlflowDirSource,
    is_run_dir,
    parse_meta,
    parse_metric_lines,
    read_meta,
)
from monitor.sources.mlflow_rows import FORMAT, LABEL, MlflowSource
from monitor.sources.mlflow_sqlite import DB_SUFFIX, MlflowDbSource, run_ids
from monitor.sources.sqlite_files import DatabaseBusy

__all__ = [
    "FORMAT",
    "LABEL",
    "DatabaseBusy",
    "MlflowDbSource",
    "MlflowDirSource",
    "MlflowSource",
    "is_run_dir",
    "locate",
    "locate_file",
    "parse_meta",
    "parse_metric_lines",
    "read_meta",
    "run_ids",
]


# -- discovery -------------------------------------------------------------------------------


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    """MLflow runs held directly in `directory`: each MLflow database (one location per run)
    and, if `directory` is a file-store run (meta.yaml + metrics/), that run."""
    found: list[RunLocation] = []
    by_name = {e.name: e for e in entries}
    meta, metrics = by_name.get(META_FILE), by_name.get(METRICS_DIR)
    if (
        meta is not None
        and metrics is not None
        and is_file_entry(meta)
        and is_dir_entry(metrics)
        and is_run_dir(directory)
    ):
        found.append(RunLocation(FORMAT, directory))
    for entry in entries:
        if entry.name.endswith(DB_SUFFIX) and is_file_entry(entry):
            found.extend(locate_file(Path(entry.path)))
    return found


def locate_file(path: Path) -> list[RunLocation]:
    """One location per (active, metric-logging) run of an MLflow database; [] otherwise."""
    if not path.name.endswith(DB_SUFFIX):
        return []
    return [RunLocation(FORMAT, path, key=run_id) for run_id in run_ids(path)]
