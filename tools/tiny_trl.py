"""A real TRL GRPO run on CPU in seconds: a 2-layer Llama and a word-level tokenizer built
here (nothing downloaded), trained against a "longer is better" reward.

The tests, the browser test and the docs' screenshot all use it, so klwatch is always shown
files that TRL itself wrote:

    .venv/bin/python tools/tiny_trl.py runs/trl-grpo --steps 200 --beta 0.04 [--klwatch]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model and tokenizer are built here

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "sun", "big", "red", "blue"]
PROMPTS = ["the cat sat", "a dog ran", "the sun", "big red log"]


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama and its tokenizer saved to `path`: TRL loads the reference model from
    the same path as the policy."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reward_words(completions: list[str], **_: Any) -> list[float]:
    """Longer is better: a reward that moves the policy away from its reference fast."""
    return [float(len(c.split())) for c in completions]


@dataclass
class Trained:
    output_dir: Path
    klwatch_dir: Path
    log_history: list[dict[str, Any]]

    @property
    def tensorboard_dir(self) -> Path:
        (events_dir,) = (self.output_dir / "runs").iterdir()  # runs/<date>_<host>
        return events_dir


def train_grpo(
    model_dir: Path,
    output_dir: Path,
    *,
    beta: float,
    max_steps: int,
    klwatch: bool = True,
    learning_rate: float = 1e-2,  # large, so KL visibly grows within a few steps
    **extra: Any,
) -> Trained:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from monitor.integrations.hf import KLWatchCallback

    dataset = Dataset.from_dict({"prompt": PROMPTS * 2})
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "beta": beta,
        "max_steps": max_steps,
        "logging_steps": 1,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 8,
        "learning_rate": learning_rate,
        "report_to": ["tensorboard"],
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    args = GRPOConfig(**{**settings, **extra})  # `extra` may override a default
    callbacks = [KLWatchCallback(output_dir / "klwatch", name="tiny-grpo")] if klwatch else []
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward_words,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset.select(range(2)) if args.eval_strategy != "no" else None,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=callbacks,
    )
    trainer.train()
    return Trained(output_dir, output_dir / "klwatch", trainer.state.log_history)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--klwatch", action="store_true", help="also write a klwatch run")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    model = build_tiny_model(args.output_dir / "tiny-model")
    train_grpo(
        model,
        args.output_dir,
        beta=args.beta,
        max_steps=args.steps,
        klwatch=args.klwatch,
        learning_rate=args.lr,
    )
    print(f"wrote a TRL GRPO run into {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
