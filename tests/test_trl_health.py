"""klwatch's health rules on real TRL GRPO runs (tiny Llama, CPU, TensorBoard).

Three trainings, each written by TRL itself (never imitation event files), each watched while
it is written the way `watch` does (a MonitoredRun refreshed after every TensorBoard flush),
then checked once more with `python -m monitor check --json`:

- saturated: β = 0 and a reward that varies for SATURATED_FROM − 1 steps, then returns one
  constant for every completion: no reward spread, advantages 0, a gradient of exactly 0
  → no_learning_signal (the issue's case: stops learning at step ~100, flagged by ~150);
- truncated: max_completion_length = 3 on a random-init model that rarely emits EOS
  → completions_truncated, judged on TRL's `completions/clipped_ratio`;
- control: a random reward (always some spread) and room for EOS → no health alert.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import monitor
from monitor import Alert, MonitoredRun
from tools.tiny_trl import PROMPTS, build_tiny_model

pytestmark = pytest.mark.slow  # real TRL trainings (tiny model, CPU)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny model and tokenizer are built here

REPO = Path(__file__).resolve().parent.parent
HEALTH_RULES = (
    "entropy_collapse",
    "no_learning_signal",
    "completions_truncated",
    "grad_spike",
    "rollout_mismatch",
)
# what klwatch calls TRL's health series (monitor/presets.py _TRL_HEALTH) and TRL's own names
# as TensorBoardCallback writes them (`train/` + the key TRL logs)
HEALTH_SERIES = {
    "entropy": "train/entropy",
    "grad_norm": "train/grad_norm",
    "truncated_frac": "train/completions/clipped_ratio",
    "zero_std_frac": "train/frac_reward_zero_std",
    "response_len": "train/completions/mean_length",
}

SATURATED_FROM = 101  # first step whose completions all get the same reward
SATURATED_STEPS = 160
TRUNCATED_STEPS = 40
CONTROL_STEPS = 80  # past grad_spike's and entropy's 50 reference rows


# -- training and watching ---------------------------------------------------------------------


@dataclass
class Watched:
    """A finished TRL run and what a MonitoredRun saw while TRL was writing it."""

    output_dir: Path
    log_history: list[dict[str, Any]]
    # rule -> (first alert raised, the last step of the rows the engine had read by then)
    raised: dict[str, tuple[Alert, int]] = field(default_factory=dict)

    @property
    def tensorboard_dir(self) -> Path:
        (events_dir,) = (self.output_dir / "runs").iterdir()  # runs/<date>_<host>
        return events_dir

    @property
    def train_logs(self) -> list[dict[str, Any]]:
        return [h for h in self.log_history if "loss" in h and "train_runtime" not in h]

    def logged(self, key: str) -> np.ndarray:
        return np.array([h[key] for h in self.train_logs], dtype=np.float64)


def alert_watcher(watched: Watched) -> Any:
    """A TrainerCallback that refreshes a MonitoredRun of the TensorBoard directory after each
    log: it runs after TRL's TensorBoardCallback, which flushes its writer in on_log."""
    from transformers import TrainerCallback

    class AlertWatcher(TrainerCallback):  # type: ignore[misc]
        monitored: MonitoredRun | None = None

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.monitored is None:
                self.monitored = MonitoredRun.open(watched.tensorboard_dir)
            for alert in self.monitored.refresh():
                last = self.monitored.run.last_step
                assert last is not None
                watched.raised.setdefault(alert.rule, (alert, last))

    return AlertWatcher()


def train(
    model_dir: Path,
    output_dir: Path,
    reward: Callable[..., list[float]],
    *,
    max_steps: int,
    max_completion_length: int,
    per_device_train_batch_size: int = 4,
    klwatch: bool = False,
) -> Watched:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from monitor.integrations.hf import KLWatchCallback

    args = GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        beta=0.0,  # TRL's default: no reference model, and a zero advantage is a zero gradient
        max_steps=max_steps,
        logging_steps=1,
        per_device_train_batch_size=per_device_train_batch_size,
        num_generations=2,
        max_completion_length=max_completion_length,
        learning_rate=1e-2,
        report_to=["tensorboard"],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    watched = Watched(output_dir, [])
    callbacks = [alert_watcher(watched)]
    if klwatch:  # a klwatch run directory beside TRL's TensorBoard events
        callbacks.append(KLWatchCallback(output_dir / "klwatch", name="tiny-grpo"))
    trainer = GRPOTrainer(
        model=str(model_dir),  # TRL loads the model from the path
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=callbacks,
    )
    trainer.train()
    watched.log_history = trainer.state.log_history
    return watched


def random_reward(seed: int) -> Callable[..., list[float]]:
    """Every completion a different reward: every prompt group has spread, every step."""
    rng = random.Random(seed)

    def reward_random(completions: list[str], **_: Any) -> list[float]:
        return [rng.random() for _ in completions]

    return reward_random


def check_json(path: Path) -> dict[str, dict[str, Any]]:
    """`python -m monitor check PATH --json`, its reports by source format."""
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    return {r["source"]["format"]: r for r in json.loads(done.stdout)["runs"]}


def rules_of(alerts: list[dict[str, Any]] | list[Alert]) -> set[str]:
    return {a["rule"] if isinstance(a, dict) else a.rule for a in alerts}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


# -- 1. reward saturates: no learning signal --------------------------------------------------


@pytest.fixture(scope="module")
def saturated(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Watched:
    rng = random.Random(1)

    def reward_saturating(completions: list[str], trainer_state: Any, **_: Any) -> list[float]:
        # TRL computes the rewards of step n while trainer_state.global_step is n − 1
        if trainer_state.global_step + 1 >= SATURATED_FROM:
            return [1.0] * len(completions)
        return [rng.random() for _ in completions]

    return train(
        tiny_model,
        tmp_path_factory.mktemp("saturated"),
        reward_saturating,
        max_steps=SATURATED_STEPS,
        max_completion_length=8,
        klwatch=True,
    )


def test_the_saturated_run_really_lost_its_signal(saturated: Watched) -> None:
    """The premise, from TRL's own logs: spread and gradient until step 100, none after."""
    steps = saturated.logged("step")
    np.testing.assert_array_equal(steps, np.arange(1, SATURATED_STEPS + 1))
    before, after = steps < SATURATED_FROM, steps >= SATURATED_FROM
    zero_std, grad = saturated.logged("frac_reward_zero_std"), saturated.logged("grad_norm")
    assert (zero_std[before] == 0).all() and (grad[before] > 0).all()
    assert (zero_std[after] == 1).all() and (grad[after] == 0).all()  # exactly 0 at β = 0


def test_saturation_is_flagged_where_it_began_and_soon(saturated: Watched) -> None:
    assert "no_learning_signal" in saturated.raised, saturated.raised
    alert, raised_at = saturated.raised["no_learning_signal"]
    # Where: an alert's step is where its evidence began. Every row before SATURATED_FROM
    # argues against (all groups have spread, the gradient is > 0), so the sum is 0 there and
    # the excursion starts at SATURATED_FROM; two rows of slack only for a rule that needs a
    # row or two of context. Never before it: that would flag the learning phase.
    assert SATURATED_FROM <= alert.step <= SATURATED_FROM + 2, alert
    # When: the target is a run that stops learning at ~100 being flagged by ~150.
    # A few zero-spread batches happen in healthy GRPO runs, so not on the first rows either.
    assert SATURATED_FROM + 5 <= raised_at <= 150, (alert, raised_at)
    assert alert.active and alert.severity == "warning"
    assert alert.metric in ("zero_std_frac", "grad_norm")
    # nothing else of the health rules fired on the learning phase
    assert {r for r in saturated.raised if r in HEALTH_RULES} <= {
        "no_learning_signal",
        "completions_truncated",  # max_completion_length=8 truncates most completions
    }


def test_check_json_reports_the_same_episode(saturated: Watched) -> None:
    reports = check_json(saturated.output_dir)
    assert set(reports) == {"klwatch", "tensorboard"}
    streamed, _ = saturated.raised["no_learning_signal"]
    for fmt, report in reports.items():
        assert report["source"]["preset"] == "trl_grpo", fmt
        (alert,) = [a for a in report["alerts"] if a["rule"] == "no_learning_signal"]
        # one pass over the finished run (TensorBoard, or the rows KLWatchCallback wrote):
        # the same episode as the TensorBoard rows fed one by one while training
        assert (alert["step"], alert["end_step"]) == (streamed.step, None), fmt
        assert set(HEALTH_SERIES) <= set(report["series"]), fmt
    run = monitor.load_run(saturated.tensorboard_dir)
    assert {name: run.meaning.mapping[name] for name in HEALTH_SERIES} == HEALTH_SERIES


# -- 2. max_completion_length too short: completions truncated --------------------------------


@pytest.fixture(scope="module")
def truncated(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Watched:
    return train(
        tiny_model,
        tmp_path_factory.mktemp("truncated"),
        random_reward(2),
        max_steps=TRUNCATED_STEPS,
        max_completion_length=3,  # a random-init model over 16 tokens rarely says <eos> in 3
        per_device_train_batch_size=8,
    )


def test_short_completions_are_flagged_as_truncated(truncated: Watched) -> None:
    clipped = truncated.logged("completions/clipped_ratio")
    assert clipped.mean() > 0.7  # the premise: most completions hit the limit
    assert "completions_truncated" in truncated.raised, truncated.raised
    alert, raised_at = truncated.raised["completions_truncated"]
    assert alert.metric == "truncated_frac"
    # judged on TRL's completions/clipped_ratio, as TensorBoard holds it (float32)
    run = monitor.load_run(truncated.tensorboard_dir)
    assert run.meaning.mapping["truncated_frac"] == "train/completions/clipped_ratio"
    np.testing.assert_allclose(run.column("truncated_frac"), clipped, rtol=1e-6)
    # the value quoted is TRL's ratio at the row that raised the alert
    assert alert.value == pytest.approx(clipped[raised_at - 1], rel=1e-6)
    # Truncated from the first step: the evidence starts within a few rows of it, and at a
    # mean share ≥ 0.7 truncated the rows add ≥ 0.34 each on average of the 12 needed (a
    # Bernoulli log-likelihood ratio of 0.7 against 0.3, monitor/alerts/config.py TruncationConfig).
    assert alert.step <= 5, alert
    assert raised_at - alert.step + 1 <= 36, (alert, raised_at)
    # the rewards vary: the truncation is not mistaken for a lost learning signal
    assert "no_learning_signal" not in truncated.raised
    report = check_json(truncated.output_dir)["tensorboard"]
    assert "completions_truncated" in rules_of(report["alerts"])
    assert set(HEALTH_SERIES) <= set(report["series"])


# -- 3. control: a reward that keeps varying, room for EOS ------------------------------------


@pytest.fixture(scope="module")
def control(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Watched:
    return train(
        tiny_model,
        tmp_path_factory.mktemp("control"),
        random_reward(3),
        max_steps=CONTROL_STEPS,
        max_completion_length=48,  # 4 prompt tokens + 48 < the model's 64 positions
    )


def test_a_run_with_spread_and_room_raises_no_health_alert(control: Watched) -> None:
    # the premise: every group has spread, the gradient moves, most completions end in EOS
    assert (control.logged("frac_reward_zero_std") == 0).all()
    assert (control.logged("grad_norm") > 0).all()
    assert control.logged("completions/clipped_ratio").mean() < 0.3
    assert not rules_of([a for a, _ in control.raised.values()]) & set(HEALTH_RULES)
    report = check_json(control.output_dir)["tensorboard"]
    assert report["rows"] == CONTROL_STEPS
    assert not rules_of(report["alerts"]) & set(HEALTH_RULES), report["alerts"]
    assert set(HEALTH_SERIES) <= set(report["series"])
