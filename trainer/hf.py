"""Your own model: any local Hugging Face causal LM as the policy (`python -m trainer --model`).

Nothing is downloaded: every `from_pretrained` is `local_files_only` (and HF_HUB_OFFLINE is
set, unless the environment says otherwise, before transformers is imported).

- policy: `AutoModelForCausalLM` (with `--lora`, peft LoRA adapters on every linear layer),
  dropout set to 0 (dropout makes log π differ between rollout and update: a corrupt KL);
- value head: a zero-initialised linear layer on the policy's last hidden state (no second
  model). It reads the hidden state detached, so the value loss never reaches the LM: with
  the grammar LM, a value loss flowing into the shared trunk drowned the policy gradient
  (docs/trainer.md);
- reference: a frozen copy of the policy, or with `--lora` the very same weights with the
  adapters disabled (one copy of the weights in memory instead of two);
- generation: the model's own `generate` with its KV cache; the sampling settings are the
  config's only (a checkpoint's generation_config.json defaults — top-k 50, repetition
  penalty, … — would sample from another distribution than the one scored);
- reward: a local sequence-classification model (`--reward-model`, the logit of
  `--reward-label` or its single logit) or a built-in reward on the decoded text.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from trainer import grammar
from trainer.config import ConfigError, TrainConfig
from trainer.model import frozen_copy, parameter_count
from trainer.ppo import Autocast, chunks
from trainer.rewards import TEXT_REWARDS
from trainer.train import DistInfo, Sampled, Trainer

hf_logging.disable_progress_bar()  # loading bars; the trainer draws its own progress

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# -- loading (local files only) -----------------------------------------------------------


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:  # common for causal LMs: pad with <eos> (masked anyway)
        if tokenizer.eos_token is None:
            raise ConfigError(f"{path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def no_dropout(config: PretrainedConfig) -> PretrainedConfig:
    for key, value in config.to_dict().items():
        if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
            setattr(config, key, 0.0)
    return config


def load_causal_lm(path: str, dtype: str) -> PreTrainedModel:
    config = no_dropout(AutoConfig.from_pretrained(path, local_files_only=True))
    lm = AutoModelForCausalLM.from_pretrained(
        path, config=config, dtype=DTYPES[dtype], local_files_only=True
    )
    for module in lm.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return lm


def load_prompts(path: Path) -> list[str]:
    """Prompts from JSONL (field "prompt"), Parquet (column "prompt") or text (one a line)."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            prompts = [
                str(p) for p in pq.read_table(path, columns=["prompt"])["prompt"].to_pylist()
            ]
        elif path.suffix in (".jsonl", ".json"):
            lines = path.read_text(encoding="utf-8").splitlines()
            prompts = [str(json.loads(line)["prompt"]) for line in lines if line.strip()]
        else:
            prompts = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read prompts from {path}: {e!r}") from e
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ConfigError(f"no prompts in {path}")
    return prompts


# -- the policy with its value head, and the reference ------------------------------------


def lm_forward(
    lm: nn.Module, idx: torch.Tensor, attention_mask: torch.Tensor, keep: int, hidden: bool
) -> Any:
    """One forward of a left-padded batch; logits of the last `keep` positions only, and with
    `hidden` the last hidden state (`output_hidden_states=-1`: transformers 5 keeps only that
    layer's; older-style models return all of them, the last one still last)."""
    # Positions count real tokens only, as `generate` numbers them for left-padded prompts.
    positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # under peft
    only_kept = {"logits_to_keep": keep} if _takes_logits_to_keep(type(base)) else {}
    return lm(
        input_ids=idx,
        attention_mask=attention_mask,
        position_ids=positions,
        output_hidden_states=-1 if hidden else False,
        use_cache=False,
        **only_kept,  # [B, keep, V] instead of [B, L, V]: the prompt's logits are never used
    )


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


class PolicyWithValueHead(nn.Module):
    """forward(idx, attention_mask, keep) -> (logits [B, keep, V] float32, values [B, keep])."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.policy = lm
        self.value_head = nn.Linear(lm.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # start PPO with V = 0, not noise
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, idx: torch.Tensor, attention_mask: torch.Tensor, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = lm_forward(self.policy, idx, attention_mask, keep, hidden=True)
        hidden = out.hidden_states[-1][:, -keep:].detach().float()  # value loss stays out
        values = self.value_head(hidden).squeeze(-1).float()
        return out.logits[:, -keep:].float(), values


class Reference:
    """ref(idx, attention_mask, keep) -> logits: a frozen copy, or the LoRA policy with its
    adapters switched off for the call."""

    def __init__(self, lm: nn.Module, adapters_off: bool = False) -> None:
        self.lm = lm
        self.adapters_off = adapters_off

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
        off = self.lm.disable_adapter() if self.adapters_off else contextlib.nullcontext()
        with off:
            return lm_forward(self.lm, idx, attention_mask, keep, hidden=False).logits.float()


def response_mask(responses: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1.0 on response tokens up to and including the first <eos>, 0.0 after it."""
    eos = torch.tensor(eos_ids, dtype=responses.dtype, device=responses.device)
    is_eos = torch.isin(responses, eos)
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~after_eos).float()


# -- the reward model ---------------------------------------------------------------------


def label_index(config: PretrainedConfig, label: str) -> int:
    """The output to score: `label` by name or index; "" for a single-logit model."""
    n, names = config.num_labels, list(config.id2label.values())
    if not label:
        if n == 1:
            return 0
        raise ConfigError(f"the reward model has {n} labels {names}: pick one (--reward-label)")
    if label.lstrip("-").isdigit() and -n <= int(label) < n:
        return int(label) % n
    if label in config.label2id:
        return int(config.label2id[label])
    raise ConfigError(f"--reward-label {label!r} is not one of the reward model's labels {names}")


class SequenceClassifierReward:
    """A local sequence-classification model: score(prompt + response) = one logit."""

    def __init__(
        self, cfg: TrainConfig, device: torch.device, autocast: Autocast, label: str
    ) -> None:
        self.tokenizer = load_tokenizer(cfg.reward_model)
        config = no_dropout(AutoConfig.from_pretrained(cfg.reward_model, local_files_only=True))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            cfg.reward_model, config=config, dtype=DTYPES[cfg.model_dtype], local_files_only=True
        )
        self.model.to(device).eval().requires_grad_(False)
        if self.model.config.pad_token_id is None:  # it finds each sequence's last token by it
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.index = label_index(self.model.config, label)
        self.device, self.autocast, self.micro_batch_size = device, autocast, cfg.micro_batch_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        scores = []
        for sl in chunks(len(texts), self.micro_batch_size):
            batch = self.tokenizer(texts[sl], return_tensors="pt", padding=True, truncation=True)
            with self.autocast():
                logits = self.model(**batch.to(self.device)).logits
            scores.append(logits[:, self.index].float())
        return torch.cat(scores)


# -- the trainer --------------------------------------------------------------------------


class HFTrainer(Trainer):
    """`Trainer` with a Hugging Face policy: only loading, sampling and decoding differ."""

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo | None = None) -> None:
        super().__init__(cfg, dist_info)
        # `generate` samples from the global RNG: one stream per rank (weights were
        # initialised identically on every rank from cfg.seed before this).
        torch.manual_seed(cfg.seed * 1000 + self.dist.rank)

    def build_models(self) -> tuple[nn.Module, Reference]:
        cfg = self.cfg
        self.tokenizer = load_tokenizer(cfg.model)
        self.tokenizer.padding_side = "left"  # generation continues every prompt at its end
        self.tokenizer.truncation_side = "left"  # a long prompt keeps its last tokens
        lm = load_causal_lm(cfg.model, cfg.model_dtype)
        self.lm_class, self.lm_dtype = type(lm).__name__, next(lm.parameters()).dtype
        self.n_parameters = parameter_count(lm)
        eos = lm.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = sorted({i for i in [*eos, self.tokenizer.eos_token_id] if i is not None})
        special = {
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.tokenizer.pad_token_id,
            "bos_token_id": self.tokenizer.bos_token_id,
        }
        lm.generation_config = GenerationConfig(**special)  # drop the checkpoint's sampling
        self.generation = GenerationConfig(
            do_sample=True,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            **special,
        )
        if cfg.gradient_checkpointing:  # active in train mode only: the PPO update
            if hasattr(lm, "activation_checkpointing_enable"):  # the old name is deprecated
                lm.activation_checkpointing_enable({"use_reentrant": False})
            else:
                lm.gradient_checkpointing_enable({"use_reentrant": False})
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            adapters = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=0.0,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            with warnings.catch_warnings():  # peft calls a transformers name deprecated in v5
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                lm = get_peft_model(lm, adapters)
        model = PolicyWithValueHead(lm).to(self.device)
        ref = Reference(lm, adapters_off=True) if cfg.lora else Reference(frozen_copy(lm))
        self.classifier = (
            SequenceClassifierReward(cfg, self.device, self.autocast, cfg.reward_label)
            if cfg.reward_model
            else None
        )
        self.text_reward = TEXT_REWARDS[cfg.reward]
        self.prompt_texts = load_prompts(Path(cfg.prompts)) if cfg.prompts else None
        return model, ref

    def next_prompt(self) -> str:
        if self.prompt_texts is not None:
            return self.prompt_rng.choice(self.prompt_texts)
        return " ".join(grammar.sample_sentence(self.prompt_rng)[: self.cfg.prompt_words])

    def sample(self) -> Sampled:
        cfg = self.cfg
        texts = [self.next_prompt() for _ in range(cfg.batch_size)]
        batch = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=cfg.max_prompt_tokens,
        )
        prompts = batch["input_ids"].to(self.device)
        prompt_mask = batch["attention_mask"].to(self.device)
        with self.autocast():
            out = self.policy.generate(
                input_ids=prompts, attention_mask=prompt_mask, generation_config=self.generation
            )
        responses = out[:, prompts.shape[1] :]
        mask = response_mask(responses, self.eos_ids)
        scores = self.score(batch["input_ids"], batch["attention_mask"], responses, mask)
        return Sampled(prompts, responses, mask, scores, prompt_mask)

    def score(
        self,
        prompts: torch.Tensor,
        prompt_mask: torch.Tensor,
        responses: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Rewards of text: the response ids come to the host once to be decoded (the
        prompts are still on the host)."""
        lengths = mask.sum(-1).long()
        rows = torch.cat([lengths[:, None], responses], dim=1).tolist()
        response_ids = [row[1 : 1 + row[0]] for row in rows]
        prompt_ids = [
            [t for t, keep in zip(p, m, strict=True) if keep]
            for p, m in zip(prompts.tolist(), prompt_mask.tolist(), strict=True)
        ]
        decode = self.tokenizer.batch_decode
        if self.classifier is not None:
            whole = [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]
            return self.classifier(decode(whole, skip_special_tokens=True))
        finished = [bool(r) and r[-1] in self.eos_ids for r in response_ids]
        triples = zip(
            decode(prompt_ids, skip_special_tokens=True),
            decode(response_ids, skip_special_tokens=True),
            finished,
            strict=True,
        )
        scores = [self.text_reward(p, r, f) for p, r, f in triples]
        return torch.tensor(scores, dtype=torch.float32, device=self.device)

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def model_info(self) -> dict[str, Any]:
        cfg = self.cfg
        dtype = str(self.lm_dtype).removeprefix("torch.")
        model = {
            "path": str(Path(cfg.model).resolve()),
            "class": self.lm_class,
            "parameters": self.n_parameters,
            "trainable_parameters": parameter_count(self.model, trainable_only=True),
            "dtype": dtype,  # of the weights; bf16 autocast computes in bfloat16 on CUDA
            "compute_dtype": "bfloat16" if self.device.type == "cuda" else dtype,
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha} if cfg.lora else None,
            "reference": "policy with adapters disabled" if cfg.lora else "frozen copy",
            "value_head": "linear on the policy's last hidden state (detached)",
        }
        reward = (
            {"model": str(Path(cfg.reward_model).resolve()), "label": cfg.reward_label or None}
            if cfg.reward_model
            else {"builtin": cfg.reward}
        )
        return {"model": model, "reward": reward}
