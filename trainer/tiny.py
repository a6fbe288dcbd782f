"""A tiny Hugging Face Llama (2 layers, 64 wide) and a reward model, built in place.

Nothing can be downloaded, so the tests, the benchmark and the docs make their own local
model directories: randomly initialised, with a word-level tokenizer over the grammar's
vocabulary (prompts start with <bos>, responses end at <eos>). For trying `--model`:

    python -m trainer.tiny /tmp/tiny                      # /tmp/tiny/policy, /tmp/tiny/reward
    python -m trainer --model /tmp/tiny/policy --reward-model /tmp/tiny/reward --steps 5
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from trainer import grammar

hf_logging.disable_progress_bar()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate([*grammar.VOCAB, "<unk>"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tiny_config(
    tokenizer: PreTrainedTokenizerFast, hidden: int = 64, layers: int = 2, **extra: object
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(4, hidden // 64),
        num_key_value_heads=max(2, hidden // 128),
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def build_tiny_models(
    root: Path, seed: int = 0, hidden: int = 64, layers: int = 2
) -> tuple[Path, Path]:
    """root/policy (LlamaForCausalLM) and root/reward (LlamaForSequenceClassification, one
    logit, same size), each saved with its tokenizer. Returns both paths."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    policy, reward = root / "policy", root / "reward"
    LlamaForCausalLM(tiny_config(tokenizer, hidden, layers)).save_pretrained(policy)
    rm_config = tiny_config(tokenizer, hidden, layers, num_labels=1)
    LlamaForSequenceClassification(rm_config).save_pretrained(reward)
    for path in (policy, reward):
        tokenizer.save_pretrained(path)
    return policy, reward


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.tiny", description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=64, help="width (benchmarks: bigger)")
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    for path in build_tiny_models(args.root, args.seed, args.hidden, args.layers):
        print(path)


if __name__ == "__main__":
    main()
