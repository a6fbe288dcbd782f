"""RunWriter: the contract on the writing side."""

from __future__ import annotations

import errno
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from monitor import RunLogError, RunWriter, load_run

KL = {"kl_mean": 0.02, "kl_max": 0.1, "beta": 0.1, "reward_mean": 0.5}


def test_writes_one_line_per_step_and_run_json(tmp_path: Path) -> None:
    config = {"kl_estimator": "k3", "kl_controller": "adaptive", "target_kl": 0.02}
    with RunWriter(tmp_path, config=config, name="demo") as writer:
        writer.log(0, **KL)
        writer.log(1, **KL, entropy=2.5)
        info = json.loads((tmp_path / "run.json").read_text())
        assert info["status"] == "running"
    lines = (tmp_path / "metrics.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    first = json.loads(lines[0])
    assert set(first) == {"step", "time", "kl_mean", "kl_max", "beta", "reward_mean"}
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["name"] == "demo" and info["schema_version"] == 1
    assert info["kl"] == {
        "units": "per_token",
        "estimator": "k3",
        "controller": "adaptive",
        "target": 0.02,
    }
    assert info["config"] == config
    assert info["created"] <= info["updated"]


def test_exception_in_context_marks_run_failed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), RunWriter(tmp_path) as writer:
        writer.log(0, **KL)
        raise RuntimeError("boom")
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"
    assert load_run(tmp_path).n_rows == 1


def test_nan_and_infinities_round_trip(tmp_path: Path) -> None:
    with RunWriter(tmp_path) as writer:
        writer.log(0, kl_mean=math.nan, kl_max=math.inf, beta=-math.inf, reward_mean=np.float32(1))
    run = load_run(tmp_path)
    row = run.metrics.iloc[0]
    assert math.isnan(row["kl_mean"]) and row["kl_max"] == math.inf
    assert row["beta"] == -math.inf and row["reward_mean"] == 1.0


@pytest.mark.parametrize(
    ("step", "metrics", "match"),
    [
        (1.5, KL, "step must be an integer"),
        (-1, KL, "step must be an integer"),
        (True, KL, "step must be an integer"),
        (0, {**KL, "entropy": "high"}, "'entropy' must be a real number"),
        (0, {**KL, "entropy": None}, "'entropy' must be a real number"),
        (0, {**KL, "done": True}, "'done' must be a real number"),
        (0, {**KL, "time": 3.0}, "reserved"),
        (0, {"kl_max": 0.1, "beta": 0.1}, r"lacks required keys \[.kl_mean.\]"),
    ],
)
def test_bad_calls_raise_and_write_nothing(
    tmp_path: Path, step: object, metrics: dict, match: str
) -> None:
    with RunWriter(tmp_path) as writer:
        writer.log(0, **KL)
        with pytest.raises(RunLogError, match=match):
            writer.log(step, **metrics)  # type: ignore[arg-type]
    assert (tmp_path / "metrics.jsonl").read_bytes().count(b"\n") == 1


def test_resume_appends_and_keeps_created(tmp_path: Path) -> None:
    with RunWriter(tmp_path, config={"lr": 1e-4}, clock=lambda: 100.0) as writer:
        writer.log(0, **KL)
    with RunWriter(tmp_path, clock=lambda: 200.0) as writer:
        writer.log(1, **KL)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["created"] == 100.0 and info["updated"] == 200.0
    assert info["config"] == {"lr": 1e-4}
    assert load_run(tmp_path).steps.tolist() == [0, 1]


def test_torn_last_line_is_terminated_before_appending(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step":0,"kl_mean":0.1}\n{"step":1,"kl_me')
    with RunWriter(tmp_path) as writer:
        writer.log(2, **KL)
    run = load_run(tmp_path)
    assert run.steps.tolist() == [0, 2]
    assert run.skipped == 1 and run.problems[-1].line == 2


def test_full_disk_raises_naming_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = RunWriter(tmp_path)
    writer.log(0, **KL)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match=r"metrics\.jsonl: No space left"):
        writer.log(1, **KL)
    monkeypatch.setattr(os, "write", real_write)
    writer.close()
    assert load_run(tmp_path).steps.tolist() == [0]  # the acknowledged record survived


def test_permission_denied_names_the_path(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores file modes; use a path under a regular file instead (ENOTDIR).
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(OSError, match=str(blocker)):
            RunWriter(blocker / "run")
        return
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OSError, match="locked"):
        RunWriter(locked / "run")


def test_samples_and_set_info(tmp_path: Path) -> None:
    with RunWriter(tmp_path) as writer:
        writer.set_info(command="python -m trainer --steps 5")
        before = time.time()
        writer.log_samples(0, [{"prompt": "a", "response": "b!!", "reward": 1.5}])
        after = time.time()
        with pytest.raises(RunLogError, match="managed by RunWriter"):
            writer.set_info(status="finished")
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["command"] == "python -m trainer --steps 5"
    run = load_run(tmp_path)
    (sample,) = run.samples()
    # the stored time is the wall-clock time of the write (the writer rounds it to 1 µs)
    assert before - 1e-6 <= sample["time"] <= after + 1e-6
    assert run.samples() == [
        {
            "step": 0,
            "time": sample["time"],
            "prompt": "a",
            "response": "b!!",
            "reward": 1.5,
        }
    ]


def test_run_json_replaced_atomically_leaves_no_temp_files(tmp_path: Path) -> None:
    with RunWriter(tmp_path) as writer:
        for step in range(5):
            writer.set_info(progress=step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "run.json"]


def test_run_json_is_readable_by_others_like_metrics(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with RunWriter(tmp_path) as writer:
            writer.log(0, **KL)
    finally:
        os.umask(old)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "metrics.jsonl").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("controller", "target"),
    [("adaptive", 0.05), ("fixed", None), ("none", None), ("proportional", 0.05)],
)
def test_target_kl_only_for_controllers_that_steer(
    tmp_path: Path, controller: str, target: float | None
) -> None:
    with RunWriter(tmp_path, config={"kl_controller": controller, "target_kl": 0.05}) as w:
        w.log(0, **KL)
    assert json.loads((tmp_path / "run.json").read_text())["kl"]["target"] == target
