"""KLWatchCallback on a real TRL GRPOTrainer (tiny Llama, CPU), plus the torch-free parts.

One module-scoped training is shared by the tests that read its output; the TensorBoard
events TRL writes beside it are the independent witness that klwatch recorded the same KL.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import monitor
from monitor.integrations import trainer_log
from monitor.integrations.trainer_log import TrainerRunLog, completion_samples, trainer_facts
from tools.tiny_trl import PROMPTS, Trained, build_tiny_model, train_grpo

pytestmark = pytest.mark.slow  # real TRL trainings (tiny model, CPU)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny model and tokenizer are built here

REPO = Path(__file__).resolve().parent.parent
BETA = 0.1
MAX_STEPS = 4
EVAL_STEPS = 2


# -- one tiny model, two trainings ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def grpo(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """β = 0.1, 4 steps, eval every 2, completions logged, TensorBoard on."""
    return train_grpo(
        tiny_model,
        tmp_path_factory.mktemp("grpo"),
        beta=BETA,
        max_steps=MAX_STEPS,
        eval_strategy="steps",
        eval_steps=EVAL_STEPS,
        per_device_eval_batch_size=2,
        log_completions=True,
        num_completions_to_print=1,
    )


@pytest.fixture(scope="module")
def grpo_no_penalty(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """β = 0: TRL drops the reference model and never computes (or logs) `kl`."""
    return train_grpo(tiny_model, tmp_path_factory.mktemp("grpo_beta0"), beta=0.0, max_steps=2)


def train_logs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [h for h in history if "loss" in h and "train_runtime" not in h]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- what the callback wrote ------------------------------------------------------------------


def test_one_row_per_logged_step_with_trls_values_under_klwatch_names(grpo: Trained) -> None:
    run = monitor.load_run(grpo.klwatch_dir)
    logged = train_logs(grpo.log_history)
    assert [h["step"] for h in logged] == list(range(1, MAX_STEPS + 1))
    np.testing.assert_array_equal(run.steps, [h["step"] for h in logged])
    for series, raw in {
        "kl_mean": "kl",
        "reward_mean": "reward",
        "entropy": "entropy",
        "response_len": "completions/mean_length",
    }.items():
        np.testing.assert_array_equal(run.column(series), [h[raw] for h in logged], series)
    assert np.isfinite(run.column("kl_mean")).all()
    assert run.column("kl_mean")[-1] > 0  # the policy moved away from its reference
    np.testing.assert_array_equal(run.column("beta"), BETA)  # constant: TRL never changes it
    np.testing.assert_array_equal(run.column("loss"), [h["loss"] for h in logged])  # extras
    assert run.problems == []


def test_no_kl_max_is_invented(grpo: Trained) -> None:
    records = read_jsonl(grpo.klwatch_dir / "metrics.jsonl")
    assert not any("kl_max" in r for r in records)  # TRL logs none; a NaN would alert
    assert not any("kl" in r for r in records)  # mapped, not duplicated


def test_eval_metrics_join_the_row_of_their_step(grpo: Trained) -> None:
    evals = {h["step"]: h for h in grpo.log_history if "eval_kl" in h}
    assert sorted(evals) == [2, 4]
    records = {r["step"]: r for r in read_jsonl(grpo.klwatch_dir / "metrics.jsonl")}
    assert len(records) == MAX_STEPS  # no extra rows without KL for the evaluations
    for step, record in records.items():
        if step in evals:
            assert record["eval_kl"] == evals[step]["eval_kl"]
            assert record["eval_reward"] == evals[step]["eval_reward"]
        else:
            assert not any(k.startswith("eval_") for k in record)


def test_run_json_says_what_the_kl_means(grpo: Trained) -> None:
    info = json.loads((grpo.klwatch_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["name"] == "tiny-grpo"
    assert info["trainer"] == "GRPOTrainer"
    assert info["trainer_preset"] == "trl_grpo"
    assert info["kl"] == {
        "units": "per_token",
        "estimator": "k3",
        "beta": BETA,
        "controller": "fixed",
        "target": None,
        "importance_weighted": True,  # GRPOConfig.use_bias_correction_kl defaults to True
    }
    assert info["config"]["beta"] == BETA
    assert info["config"]["max_steps"] == MAX_STEPS
    json.dumps(info["config"], allow_nan=False)  # plain JSON, nothing repr'd half-way
    assert info["summary"]["train_runtime"] > 0  # the end-of-training log, not a row

    meaning = monitor.load_run(grpo.klwatch_dir).meaning
    assert (meaning.preset, meaning.units, meaning.estimator) == ("trl_grpo", "per_token", "k3")
    assert meaning.kl_found and meaning.beta_logged and not meaning.kl_max_logged
    # on_train_end closed it: no exit hook will touch it, the SIGTERM handler is gone again
    assert trainer_log._open_runs == []
    assert signal.getsignal(signal.SIGTERM) is not trainer_log._on_sigterm


def test_samples_come_from_trls_completions(grpo: Trained) -> None:
    samples = monitor.load_run(grpo.klwatch_dir).samples(100)
    assert {s["step"] for s in samples} == set(range(1, MAX_STEPS + 1))
    for sample in samples:
        assert sample["prompt"] in PROMPTS
        assert sample["reward"] == len(sample["response"].split())
        assert math.isfinite(sample["advantage"])


def test_tensorboard_events_hold_the_same_kl(grpo: Trained) -> None:
    """Two writers, one number: TRL's TensorBoard scalars (float32) and klwatch's rows."""
    ours = monitor.load_run(grpo.klwatch_dir)
    board = monitor.load_run(grpo.tensorboard_dir)
    assert board.meaning.preset == "trl_grpo"
    kl = board.column("kl_mean")
    has_kl = np.isfinite(kl)
    np.testing.assert_array_equal(board.steps[has_kl], ours.steps)
    np.testing.assert_allclose(kl[has_kl], ours.column("kl_mean"), rtol=1e-6)


def test_beta_zero_is_reported_as_no_kl_penalty(grpo_no_penalty: Trained) -> None:
    assert not any("kl" in h for h in grpo_no_penalty.log_history)  # TRL skips it at β = 0
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(grpo_no_penalty.output_dir), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    runs = {r["source"]["format"]: r for r in json.loads(done.stdout)["runs"]}
    assert set(runs) == {"klwatch", "tensorboard"}, done.stdout
    for fmt, report in runs.items():
        assert "no_kl_penalty" in [a["rule"] for a in report["alerts"]], fmt


# -- torch-free parts: import hygiene, failure hooks, mapping rules ----------------------------


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_monitor_needs_no_torch() -> None:
    done = run_python(
        """
        import sys
        import monitor, monitor.integrations, monitor.integrations.trainer_log
        heavy = sorted(m for m in ("torch", "transformers", "trl") if m in sys.modules)
        print(",".join(heavy))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


FAKE_TRAINING = """
    import os, signal, sys
    from monitor.integrations.trainer_log import TrainerRunLog

    class GRPOConfig:  # stands in for trl.GRPOConfig: only its name and fields are read
        beta = 0.04
        run_name = None
        def to_dict(self):
            return {"beta": self.beta}

    run = TrainerRunLog(sys.argv[1])
    run.begin(GRPOConfig())
    run.record(1, {"kl": 0.01, "reward": 1.0})
    run.record(2, {"kl": 0.02, "reward": 1.5}, eval_follows=True)  # pending when it dies
    if sys.argv[2] == "raise":
        raise RuntimeError("CUDA out of memory (pretend)")
    os.kill(os.getpid(), signal.SIGTERM)
    """


@pytest.mark.parametrize(
    ("how", "returncode", "reason"),
    [("raise", 1, "exited before training ended"), ("sigterm", -signal.SIGTERM, "SIGTERM")],
)
def test_a_run_that_dies_is_marked_failed(
    tmp_path: Path, how: str, returncode: int, reason: str
) -> None:
    done = run_python(FAKE_TRAINING, str(tmp_path), how)
    assert done.returncode == returncode, done.stderr
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "failed"
    assert reason in info["failure"]
    run = monitor.load_run(tmp_path)
    np.testing.assert_array_equal(run.steps, [1, 2])  # the pending row was saved too
    np.testing.assert_array_equal(run.column("beta"), 0.04)


class FakeConfig:
    """Stands in for TRL's configs: trainer_facts reads only class names and fields."""

    beta = 0.05
    run_name = None
    log_completions = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "hub_token": "<HUB_TOKEN>",
            "model_init_kwargs": {"token": "hf_secret", "dtype": "float32"},
            "reward_weights": None,
        }


class RLOOConfig(FakeConfig):
    pass


class PPOConfig(FakeConfig):
    kl_coef = 0.2
    kl_estimator = "k3"


class DPOConfig(FakeConfig):  # a β that is not a KL coefficient
    pass


def test_config_class_decides_the_trainer() -> None:
    rloo = trainer_facts(RLOOConfig())
    assert (rloo.preset, rloo.kl_units, rloo.kl_estimator, rloo.beta) == (
        "trl_rloo",
        "per_token",
        "k1",
        0.05,
    )
    ppo = trainer_facts(PPOConfig())
    assert (ppo.trainer, ppo.preset, ppo.kl_units, ppo.kl_estimator, ppo.beta) == (
        "PPOTrainer",
        "trl_ppo",
        "per_sequence",
        "k3",
        0.2,
    )
    dpo = trainer_facts(DPOConfig())
    assert (dpo.preset, dpo.beta) == (None, None)


@pytest.fixture
def open_run(tmp_path: Path) -> Iterator[Callable[..., TrainerRunLog]]:
    opened: list[TrainerRunLog] = []

    def make(config: object, **kwargs: Any) -> TrainerRunLog:
        run = TrainerRunLog(tmp_path, **kwargs)
        run.begin(config)
        opened.append(run)
        return run

    yield make
    for run in opened:
        run.finish()


def test_ppo_names_map_and_secrets_stay_out(
    open_run: Callable[..., TrainerRunLog], tmp_path: Path
) -> None:
    run = open_run(PPOConfig())
    run.record(1, {"objective/kl": 3.5, "objective/scores": 0.5, "objective/rlhf_reward": 0.2})
    run.finish()
    (record,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert record["kl_mean"] == 3.5 and record["reward_total"] == 0.2 and record["beta"] == 0.2
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["kl"]["units"] == "per_sequence"
    assert "hub_token" not in info["config"]
    assert info["config"]["model_init_kwargs"] == {"dtype": "float32"}
    assert monitor.load_run(tmp_path).meaning.units == "per_sequence"


def test_unknown_config_detects_from_names_and_guesses_no_beta(
    open_run: Callable[..., TrainerRunLog], tmp_path: Path
) -> None:
    run = open_run(DPOConfig())
    run.record(1, {"loss": 1.0})  # nothing to detect yet
    assert json.loads((tmp_path / "run.json").read_text())["kl"]["units"] is None  # no guess
    run.record(2, {"kl": 0.1, "reward": 1.0, "completions/mean_length": 5.0})
    run.finish()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert records[1]["kl_mean"] == 0.1 and "beta" not in records[1]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["trainer_preset"] == "trl_grpo" and info["kl"]["beta"] is None


def test_trl_none_is_a_nan_kl_and_odd_values_are_skipped(
    open_run: Callable[..., TrainerRunLog], tmp_path: Path
) -> None:
    run = open_run(RLOOConfig())
    # TRL logs None when every KL it averaged was NaN; a string or a bool is no series.
    run.record(1, {"kl": None, "reward": 1.0, "note": "hi", "flag": True, "beta": 9.0})
    run.finish()
    (record,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert math.isnan(record["kl_mean"])
    assert "note" not in record and "flag" not in record
    assert record["beta"] == 0.05 and record["trainer/beta"] == 9.0  # config β wins the name


def test_eval_without_a_training_row_and_late_logs_make_no_rows(
    open_run: Callable[..., TrainerRunLog], tmp_path: Path
) -> None:
    run = open_run(RLOOConfig())
    run.record(1, {"kl": 0.1, "reward": 1.0})
    run.record(1, {"custom": 3.0})  # after step 1's row was written: would supersede it
    run.record(3, {"eval_kl": 0.2, "eval_loss": 1.0, "epoch": 0.5})
    run.record(3, {"train_runtime": 1.0, "total_flos": 0.0, "train_loss": 0.1, "epoch": 0.5})
    run.finish()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["last_eval"] == {"step": 3, "eval_kl": 0.2, "eval_loss": 1.0}
    assert info["summary"]["train_loss"] == 0.1


def test_only_the_main_process_writes(tmp_path: Path) -> None:
    from transformers import TrainerControl, TrainerState

    from monitor.integrations.hf import KLWatchCallback

    callback = KLWatchCallback(tmp_path / "rank1")
    state = TrainerState(is_world_process_zero=False, global_step=1)
    callback.on_train_begin(RLOOConfig(), state, TrainerControl())  # type: ignore[arg-type]
    callback.on_log(RLOOConfig(), state, TrainerControl(), logs={"kl": 0.1})  # type: ignore[arg-type]
    callback.on_train_end(RLOOConfig(), state, TrainerControl())  # type: ignore[arg-type]
    assert not (tmp_path / "rank1").exists()


def test_completion_samples_from_chat_messages() -> None:
    rows = [
        {
            "step": 3,
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "hello"}],
            "format": 1.0,
            "length": 0.5,
            "advantage": 0.3,
        }
    ]
    (sample,) = completion_samples(rows, reward_weights=[1.0, 2.0])
    assert sample["prompt"] == "user: hi" and sample["response"] == "hello"
    assert sample["reward"] == 2.0 and sample["format"] == 1.0
    (unweighted,) = completion_samples(rows)
    assert "reward" not in unweighted  # two reward columns, weights unknown: not guessed
