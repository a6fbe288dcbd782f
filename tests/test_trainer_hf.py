"""`python -m trainer --model`: a tiny Llama and a tiny reward model built here (tokenizers
library, nothing from a hub), trained a few steps on the CPU: frozen-copy reference, LoRA
(reference = adapters off), a reward model with prompts from a file, micro-batches, resume."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import math
from pathlib import Path

import pytest
import torch

from monitor.__main__ import main as monitor_main
from trainer.__main__ import main
from trainer.config import TrainConfig
from trainer.loop import make_trainer
from trainer.ppo import warp_logits
from trainer.rewards import exclaim_text, sentiment_text
from trainer.train import CHECKPOINT_FILE

# transformers and torch.distributed load in ~12 s: not for `make check`'s edit-test loop.
pytestmark = pytest.mark.slow

CONTRACT = ("step", "time", "kl_mean", "kl_max", "beta", "reward_mean")
SERIES = (
    "reward_total",
    "kl_seq_mean",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_full",
    "entropy",
    "response_len",
    "policy_loss",
    "value_loss",
    "clipfrac",
    "approx_kl",
    "grad_norm",
    "tokens_per_s",
)
# lr 1e-3 so that KL visibly moves within 3 steps; one thread: these 2-core boxes are shared.
SMALL = {
    "batch_size": 8,
    "ppo_epochs": 2,
    "num_minibatches": 2,
    "max_new_tokens": 8,
    "samples_every": 2,
    "torch_threads": 1,
    "lr": 1e-3,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(policy dir, reward-model dir): a 2-layer, 64-wide Llama and a one-logit
    LlamaForSequenceClassification, with a word-level tokenizer over the grammar's words."""
    from trainer.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


def _train(tmp_path: Path, name: str, *flags: str, steps: int = 3, **config: object) -> Path:
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps({**SMALL, **config}))
    run_dir = tmp_path / name
    argv = ["--run-dir", str(run_dir), "--steps", str(steps), "--device", "cpu"]
    assert main([*argv, "--config", str(cfg), "--quiet", *flags]) == 0
    return run_dir


def _records(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _check_contract(run_dir: Path) -> list[dict[str, float]]:
    rows = _records(run_dir)
    assert [r["step"] for r in rows] == list(range(len(rows)))
    for r in rows:
        missing = set(CONTRACT + SERIES) - r.keys()
        assert not missing, missing
        assert all(math.isfinite(r[k]) for k in CONTRACT + SERIES), r
        assert r["kl_max"] >= r["kl_mean"] - 1e-6
        assert 1 <= r["response_len"] <= SMALL["max_new_tokens"]
    # The policy starts as the reference: no drift at step 0, then the update moves it.
    assert rows[0]["kl_mean"] == 0.0 and rows[0]["kl_full"] == 0.0
    assert rows[-1]["kl_full"] > 1e-4 and rows[-1]["kl_max"] > 0
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 2}
    assert all(s["prompt"] and {"response", "reward"} <= s.keys() for s in samples)
    return rows


def _info(run_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run_dir / "run.json").read_text())


def test_frozen_copy_run_keeps_the_contract(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    policy, _ = tiny
    run_dir = _train(tmp_path, "full", "--model", str(policy))
    _check_contract(run_dir)
    info = _info(run_dir)
    assert info["status"] == "finished"
    assert info["kl"] == {
        "units": "per_token",
        "estimator": "k1",
        "controller": "adaptive",
        "target": 0.05,
    }
    n_params = AutoModelForCausalLM.from_pretrained(policy, local_files_only=True).num_parameters()
    model = info["model"]
    assert model["path"] == str(policy.resolve()) and info["config"]["model"] == str(policy)
    assert model["parameters"] == n_params
    assert model["trainable_parameters"] == n_params + 64 + 1  # + the value head
    assert model["dtype"] == "float32" and model["reference"] == "frozen copy"
    assert info["reward"] == {"builtin": "exclaim"}
    # The monitor reads it like a run of the shipped model.
    capsys.readouterr()
    assert monitor_main(["check", str(run_dir), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["rows"] == 3 and run["source"]["preset"] == "klwatch"
    assert run["source"]["kl_units"] == "per_token"


def test_lora_reference_is_the_model_with_adapters_off_and_resumes(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    policy, _ = tiny
    straight = _train(tmp_path, "lora", "--model", str(policy), "--lora", "--lora-r", "4")
    rows = _check_contract(straight)
    model = _info(straight)["model"]
    assert model["reference"] == "policy with adapters disabled"
    assert model["lora"] == {"r": 4, "alpha": 32}
    assert 65 < model["trainable_parameters"] < model["parameters"] / 4
    # The checkpoint holds what was trained (adapters, value head), not the frozen base.
    weights = torch.load(straight / CHECKPOINT_FILE, weights_only=False)["model"]
    assert weights and all("lora_" in k or k.startswith("value_head") for k in weights)

    split = _train(tmp_path, "split", "--model", str(policy), "--lora", "--lora-r", "4", steps=2)
    assert main(["--run-dir", str(split), "--steps", "3", "--resume", "--quiet"]) == 0
    resumed = _records(split)
    for key in ("kl_mean", "kl_full", "reward_mean", "policy_loss", "beta"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in rows], abs=1e-6)


def test_reward_model_prompts_file_and_micro_batches(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    policy, reward = tiny
    prompts = ["the happy dog", "my old cat", "a teacher"]
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    flags = ["--model", str(policy), "--reward-model", str(reward), "--prompts", str(prompts_file)]
    run_dir = _train(tmp_path, "rm", *flags, "--micro-batch-size", "3")
    rows = _check_contract(run_dir)
    # A randomly initialised reward model gives every text some nonzero, varying score.
    assert len({r["reward_mean"] for r in rows}) > 1
    info = _info(run_dir)
    assert info["reward"] == {"model": str(reward.resolve()), "label": None}
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} <= set(prompts)


def test_micro_batches_compute_the_same_step(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """Gradient accumulation over micro-batches is the whole-minibatch update, up to float
    rounding (the losses are token means over the minibatch either way)."""
    policy, _ = tiny

    def two_steps(micro_batch_size: int) -> list[dict[str, float]]:
        cfg = TrainConfig(
            **SMALL, model=str(policy), device="cpu", micro_batch_size=micro_batch_size
        )
        trainer = make_trainer(cfg)
        return [trainer.step() for _ in range(2)]

    whole, micro = two_steps(0), two_steps(1)
    for a, b in zip(whole, micro, strict=True):
        for key in ("kl_mean", "kl_full", "policy_loss", "value_loss", "grad_norm", "entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lora"], "lora needs a Hugging Face model"),
        (["--prompts", "p.jsonl"], "prompts needs a Hugging Face model"),
        (["--model", "/nonexistent/model"], "not a local Hugging Face model"),
        (["--top-p", "1.5"], "top_p must lie in (0, 1]"),
    ],
)
def test_bad_model_arguments_exit_2(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--run-dir", str(tmp_path / "r"), *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_reward_label_exits_2(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, reward = tiny
    argv = ["--model", str(policy), "--reward-model", str(reward), "--reward-label", "helpful"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--run-dir", str(tmp_path / "r"), "--steps", "1", "--quiet"])
    assert exc.value.code == 2
    assert "'helpful' is not one of the reward model's labels" in capsys.readouterr().err


def test_text_rewards_match_the_token_rewards() -> None:
    assert exclaim_text("the cat", "is happy ! ! !", True) == 3.0
    assert exclaim_text("a dog", "! sees !", False) == 1.0
    assert exclaim_text("a dog", "! ! sees a cat .", True) == 0.0
    assert sentiment_text("the happy", "dog loves my kind cat .", True) == 1.0
    assert sentiment_text("the big", "dog sees a red cat .", True) == 0.0
    assert sentiment_text("the happy", "dog is good .", False) == -1.0  # truncated
    assert sentiment_text("the happy", "good good good !", True) == -1.0  # word salad


def test_top_k_top_p_match_the_transformers_warpers() -> None:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    ids = torch.zeros(4, 1, dtype=torch.long)
    for top_p in (0.3, 0.9):
        expected = TopPLogitsWarper(top_p)(ids, logits.clone()).isinf()
        assert torch.equal(warp_logits(logits, top_p=top_p).isinf(), expected)
    expected = TopKLogitsWarper(7)(ids, logits.clone()).isinf()
    assert torch.equal(warp_logits(logits, top_k=7).isinf(), expected)
    assert torch.equal(warp_logits(logits, temperature=2.0), logits / 2)


def test_prompt_files(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainer.config import ConfigError
    from trainer.hf import load_prompts

    text = tmp_path / "prompts.txt"
    text.write_text("the cat\n\n  \na dog\n")
    assert load_prompts(text) == ["the cat", "a dog"]
    parquet = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"prompt": ["my friend", "our city"], "id": [1, 2]}), parquet)
    assert load_prompts(parquet) == ["my friend", "our city"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    with pytest.raises(ConfigError, match="cannot read prompts"):
        load_prompts(bad)
