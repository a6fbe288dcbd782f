"""verl's file logger (`trainer.logger=[file]`) read incrementally.

The files are written by verl's own `FileLogger` (verl 0.9.1, verl/utils/tracking.py — the
class `Tracking` instantiates for the "file" backend): `$VERL_FILE_LOGGER_ROOT/<project>/
<experiment>.jsonl`, opened with "wb", one orjson line `{"step": …, "data": {…}}` per log.
verl is installed with --no-deps (see the Makefile): its package __init__ pulls in ray,
tensordict and a transformers pin this project cannot meet, so the module is loaded from its
file; tracking.py itself needs only orjson and packaging.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.sources import find_runs, locate_path, open_source
from monitor.sources.base import RunLocation
from monitor.sources.verl import VerlSource, is_verl_file, locate_file


def _verl_tracking() -> ModuleType:
    """verl.utils.tracking, loaded from the installed package without running verl/__init__."""
    spec = importlib.util.find_spec("verl")  # finds the package; imports nothing
    assert spec is not None and spec.origin, "verl must be installed (make test installs it)"
    path = Path(spec.origin).parent / "utils" / "tracking.py"
    module_spec = importlib.util.spec_from_file_location("_verl_tracking", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


TRACKING = _verl_tracking()


class VerlFileLogger:
    """verl's own FileLogger under a root of the test's choosing (its env variable)."""

    def __init__(self, root: Path, project: str, experiment: str) -> None:
        old = os.environ.get("VERL_FILE_LOGGER_ROOT")
        os.environ["VERL_FILE_LOGGER_ROOT"] = str(root)
        os.environ.pop("VERL_FILE_LOGGER_PATH", None)
        try:
            self.logger = TRACKING.FileLogger(project, experiment)
        finally:
            if old is None:
                del os.environ["VERL_FILE_LOGGER_ROOT"]
            else:
                os.environ["VERL_FILE_LOGGER_ROOT"] = old
        self.filepath = Path(self.logger.filepath)
        self.fp = self.logger.fp

    def log(self, data: dict[str, Any], step: int) -> None:
        self.logger.log(data, step)

    def finish(self) -> None:
        self.logger.finish()


def verl_metrics(step: int) -> dict[str, Any]:
    """A few of the names verl's PPO trainer logs, with numpy scalars as verl has them."""
    return {
        "actor/ppo_kl": np.float32(0.001 * step),
        "actor/kl_loss": 0.002 * step,
        "actor/kl_coef": 0.001,
        "critic/score/mean": np.float64(0.5 + step / 100),
        "timing_s/step": 3,
        "response_length/mean": np.int64(120 + step),
    }


def read_all(source: VerlSource) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """One read's blocks joined: steps, columns (NaN where a block lacks one), skipped."""
    read = source.read()
    names = {name: None for block in read.blocks for name in block.columns}
    steps = np.concatenate([b.steps for b in read.blocks] or [np.zeros(0, np.int64)])
    columns = {
        name: np.concatenate(
            [b.columns.get(name, np.full(b.n, np.nan)) for b in read.blocks] or [np.zeros(0)]
        )
        for name in names
    }
    return steps, columns, read.skipped


@pytest.fixture
def logger(tmp_path: Path):
    log = VerlFileLogger(tmp_path, "gsm8k_ppo", "qwen-0.5b-kl0.001")
    yield log
    log.fp.close()


def test_reads_nested_data_with_raw_names(logger: VerlFileLogger) -> None:
    for step in range(1, 6):
        logger.log(verl_metrics(step), step)
    source = open_source(RunLocation("verl", logger.filepath))
    steps, columns, skipped = read_all(source)
    assert steps.tolist() == [1, 2, 3, 4, 5]
    assert skipped == 0
    assert set(columns) == set(verl_metrics(1))
    np.testing.assert_allclose(columns["critic/score/mean"], [0.51, 0.52, 0.53, 0.54, 0.55])
    np.testing.assert_allclose(
        columns["actor/ppo_kl"], np.float32([0.001 * s for s in range(1, 6)])
    )
    assert "time" not in columns  # verl logs no wall-clock time


def test_only_new_lines_and_torn_last_line(logger: VerlFileLogger) -> None:
    logger.log(verl_metrics(1), 1)
    source = VerlSource(RunLocation("verl", logger.filepath))
    assert read_all(source)[0].tolist() == [1]
    assert read_all(source)[0].tolist() == []
    line = orjson.dumps({"step": 2, "data": {"actor/ppo_kl": 0.5}}) + b"\n"
    logger.fp.write(line[:20])  # a line without its newline is not a record yet
    assert read_all(source)[0].tolist() == []
    logger.fp.write(line[20:])
    logger.log(verl_metrics(3), 3)
    steps, columns, _ = read_all(source)
    assert steps.tolist() == [2, 3]
    assert columns["actor/ppo_kl"][0] == 0.5
    assert math.isnan(columns["critic/score/mean"][0])  # not logged at step 2


def test_nan_and_inf_become_null_then_nan(logger: VerlFileLogger) -> None:
    # orjson writes non-finite floats as null: what reaches the reader is a missing value.
    logger.log({"actor/ppo_kl": float("nan"), "actor/grad_norm": float("inf")}, 1)
    logger.log({"actor/ppo_kl": 0.01, "actor/grad_norm": 2.0}, 2)
    assert b"null" in logger.filepath.read_bytes()
    _, columns, skipped = read_all(VerlSource(RunLocation("verl", logger.filepath)))
    assert skipped == 0
    assert math.isnan(columns["actor/ppo_kl"][0]) and columns["actor/ppo_kl"][1] == 0.01
    assert math.isnan(columns["actor/grad_norm"][0])


def test_non_numeric_values_are_not_series(logger: VerlFileLogger) -> None:
    logger.log({"actor/ppo_kl": 0.1, "hist": np.array([1.0, 2.0]), "tag": "x", "ok": True}, 1)
    _, columns, skipped = read_all(VerlSource(RunLocation("verl", logger.filepath)))
    assert set(columns) == {"actor/ppo_kl"} and skipped == 0


def test_bad_lines_skipped_and_counted(logger: VerlFileLogger) -> None:
    logger.log(verl_metrics(1), 1)
    logger.fp.write(b"not json\n")
    logger.fp.write(b'{"step": 2, "data": 5}\n')  # data must be an object
    logger.fp.write(b'{"step": "3", "data": {}}\n')
    logger.fp.write(b'{"step": 4}\n')
    logger.log(verl_metrics(5), 5)
    source = VerlSource(RunLocation("verl", logger.filepath))
    read = source.read()
    steps = np.concatenate([b.steps for b in read.blocks])
    assert steps.tolist() == [1, 5]
    assert read.skipped == 4
    assert [p.line for p in read.problems] == [2, 3, 4, 5]
    assert all(p.file == logger.filepath.name for p in read.problems)


def test_restart_truncates_and_reads_again(tmp_path: Path) -> None:
    # verl opens the file with "wb": a resumed run starts the file over (same inode).
    first = VerlFileLogger(tmp_path, "p", "e")
    for step in range(1, 4):
        first.log(verl_metrics(step), step)
    first.finish()
    source = VerlSource(RunLocation("verl", first.filepath))
    assert read_all(source)[0].tolist() == [1, 2, 3]
    second = VerlFileLogger(tmp_path, "p", "e")  # resumed from global_step_2
    second.log({"val-core/reward/mean@1": 0.7}, 2)
    for step in range(3, 6):  # grows past the old size before the next read
        second.log(verl_metrics(step), step)
    second.finish()
    read = source.read()
    assert read.reset
    assert np.concatenate([b.steps for b in read.blocks]).tolist() == [2, 3, 4, 5]


def test_truncated_to_smaller_resets(tmp_path: Path) -> None:
    first = VerlFileLogger(tmp_path, "p", "e")
    for step in range(1, 6):
        first.log(verl_metrics(step), step)
    first.finish()
    source = VerlSource(RunLocation("verl", first.filepath))
    read_all(source)
    second = VerlFileLogger(tmp_path, "p", "e")
    second.log(verl_metrics(3), 3)
    second.finish()
    read = source.read()
    assert read.reset and read.blocks[0].steps.tolist() == [3]


def test_locate_and_name(tmp_path: Path, logger: VerlFileLogger) -> None:
    logger.log(verl_metrics(1), 1)
    project_dir = logger.filepath.parent
    (project_dir / "notes.jsonl").write_text('{"step": 1, "kl": 0.1}\n')  # klwatch-like
    (project_dir / "metrics.jsonl").write_text('{"step": 1, "data": {}}\n')  # klwatch's name
    (project_dir / "empty.jsonl").write_bytes(b"")  # FileLogger before its first log
    (project_dir / "torn.jsonl").write_bytes(b'{"step": 1, "da')
    found = [loc for loc in find_runs(tmp_path) if loc.format == "verl"]
    assert found == [RunLocation("verl", logger.filepath)]
    assert locate_file(logger.filepath) == found
    assert locate_path(logger.filepath) == found
    assert locate_file(project_dir / "notes.jsonl") == []
    assert not is_verl_file(project_dir / "empty.jsonl")
    source = open_source(found[0])
    assert source.refresh_info() and not source.refresh_info()
    assert source.info["name"] == "gsm8k_ppo/qwen-0.5b-kl0.001"
    assert source.default_name == "gsm8k_ppo/qwen-0.5b-kl0.001"


def test_empty_file_becomes_a_run_once_its_first_line_is_written(tmp_path: Path) -> None:
    log = VerlFileLogger(tmp_path, "p", "e")
    assert locate_file(log.filepath) == []
    log.log(verl_metrics(1), 1)
    assert locate_file(log.filepath) == [RunLocation("verl", log.filepath)]
    log.finish()


def test_peek_stamp_and_missing_file(tmp_path: Path, logger: VerlFileLogger) -> None:
    for step in range(1, 4):
        logger.log(verl_metrics(step), step)
    source = VerlSource(RunLocation("verl", logger.filepath))
    assert source.peek_last_step() == 3
    before = source.stamp()
    logger.log(verl_metrics(4), 4)
    assert source.stamp() != before
    assert source.last_write_time() == pytest.approx(os.stat(logger.filepath).st_mtime)
    missing = VerlSource(RunLocation("verl", tmp_path / "gone.jsonl"))
    with pytest.raises(OSError):
        missing.read()
    assert missing.peek_last_step() is None and missing.last_write_time() is None


def test_tracking_with_the_file_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's public entry, as its trainer builds it for `trainer.logger=[file]`."""
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    tracking = TRACKING.Tracking("proj", "exp", default_backend="file")
    for step in range(1, 4):
        tracking.log(data={**verl_metrics(step), "x/nan": float("nan")}, step=step)
    tracking.finish()
    (location,) = locate_file(tmp_path / "proj" / "exp.jsonl")
    steps, columns, skipped = read_all(VerlSource(location))
    assert steps.tolist() == [1, 2, 3] and skipped == 0
    assert np.isnan(columns["x/nan"]).all()  # orjson wrote null
    assert columns["critic/score/mean"].tolist() == pytest.approx([0.51, 0.52, 0.53])
