"""End to end: the CLI writes a valid run directory, resumes it, rejects bad arguments,
and trains data-parallel with two CPU processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.__main__ import main
from trainer.train import CHECKPOINT_FILE

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("step", "time", "kl_mean", "kl_max", "beta", "reward_mean")
EXTRA = (
    "reward_total",
    "kl_seq_mean",
    "kl_k1",
    "kl_k3",
    "entropy",
    "response_len",
    "policy_loss",
    "value_loss",
    "clipfrac",
    "approx_kl",
    "grad_norm",
    "tokens_per_s",
)
SMALL = {
    "batch_size": 16,
    "ppo_epochs": 2,
    "num_minibatches": 2,
    "max_new_tokens": 12,
    "checkpoint_every": 3,
    "samples_every": 2,
    "torch_threads": 1,
}


def _config(tmp_path: Path, **extra: object) -> str:
    path = tmp_path / "small.json"
    path.write_text(json.dumps({**SMALL, **extra}))
    return str(path)


def _records(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_five_steps_write_a_valid_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [
        "--run-dir",
        str(run_dir),
        "--steps",
        "5",
        "--kl-controller",
        "adaptive",
        "--target-kl",
        "0.02",
        "--kl-estimator",
        "k3",
        "--config",
        _config(tmp_path),
        "--quiet",
    ]
    assert main(argv) == 0
    rows = _records(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        assert all(k in r for k in REQUIRED + EXTRA), set(REQUIRED + EXTRA) - r.keys()
        assert r["kl_max"] >= r["kl_mean"] - 1e-6
        assert r["kl_mean"] == pytest.approx(r["kl_k3"])  # the chosen estimator is kl_mean
    assert rows[0]["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 0
    assert rows[0]["beta"] == pytest.approx(0.1)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["kl"] == {
        "units": "per_token",
        "estimator": "k3",
        "controller": "adaptive",
        "target": 0.02,
    }
    assert info["config"]["batch_size"] == 16
    assert info["command"] == "python -m trainer " + " ".join(argv)
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 2, 4}
    assert all({"prompt", "response", "reward"} <= s.keys() for s in samples)
    assert (run_dir / CHECKPOINT_FILE).is_file()


def test_resume_continues_steps_and_appends(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = ["--run-dir", str(run_dir), "--config", _config(tmp_path), "--quiet"]
    assert main([*common, "--steps", "3", "--kl-controller", "fixed", "--kl-coef", "0.2"]) == 0
    first = _records(run_dir)
    # A run dir that already holds a run is not silently overwritten.
    with pytest.raises(SystemExit) as exc:
        main([*common, "--steps", "5"])
    assert exc.value.code == 2
    assert main([*common, "--steps", "5", "--resume"]) == 0
    rows = _records(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[:3] == first  # appended, not rewritten
    assert all(r["beta"] == pytest.approx(0.2) for r in rows)  # saved config kept
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["config"]["steps"] == 5
    assert len(info["command_history"]) == 2 and "--resume" in info["command"]


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["--run-dir", str(straight), "--steps", "4", "--config", cfg, "--quiet"]) == 0
    assert main(["--run-dir", str(split), "--steps", "3", "--config", cfg, "--quiet"]) == 0
    assert main(["--run-dir", str(split), "--steps", "4", "--resume", "--quiet"]) == 0
    a, b = _records(straight), _records(split)
    for key in ("kl_mean", "beta", "reward_mean", "policy_loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kl-controller", "pid"], "invalid choice"),
        (["--steps", "0"], "steps must be > 0"),
        (["--target-kl", "-1"], "target_kl must be > 0"),
        (["--steps", "ten"], "invalid int value"),
        (["--resume"], "--resume needs --run-dir"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('lr = "fast"\n')
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(bad), "--run-dir", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert "lr" in capsys.readouterr().err


@pytest.mark.slow  # two torchrun processes with gloo
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "trainer",
        "--run-dir",
        str(run_dir),
        "--steps",
        "3",
        "--device",
        "cpu",
        "--config",
        _config(tmp_path, batch_size=8),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _records(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]  # one writer: rank 0 only
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    assert info["command"].startswith("torchrun --nproc-per-node 2 -m trainer")
    # tokens_per_s counts both ranks' tokens; response_len is the mean over both ranks
    for r in rows:
        assert r["kl_max"] >= r["kl_mean"] - 1e-6
        assert 1 <= r["response_len"] <= 12
