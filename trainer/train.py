"""The training loop: rollout → score → KL penalty → GAE → PPO → β update → one log record.

Read top to bottom: `Trainer.step()` is one PPO step, `run()` the loop around it. Every step's
statistics are packed into one device tensor, reduced across DDP ranks (sum for means, max for
maxima) and brought to the host with a single `.tolist()`: one device sync per step.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer import grammar
from trainer.config import ConfigError, TrainConfig, resolve_pretrained
from trainer.controllers import KLController, make_controller
from trainer.model import PolicyWithValue, frozen_copy, load_pretrained, parameter_count
from trainer.ppo import (
    PPOHyper,
    Rollout,
    gae,
    generate,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    ppo_update,
    score_rollout,
)
from trainer.rewards import SentimentReward, make_reward

CHECKPOINT_FILE = "checkpoint.ckpt"

# How the per-step statistics are reduced across DDP ranks: MAX_KEYS take the maximum,
# SUM_KEYS the sum, every other key the mean (each rank holds the same number of sequences,
# so the mean of means is exact).
MAX_KEYS = ("kl_max",)
SUM_KEYS = ("tokens",)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_choice: str) -> DistInfo:
    """torchrun sets WORLD_SIZE/RANK; then join the group (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def sample_prompts(rng: random.Random, n: int, n_words: int) -> list[list[int]]:
    """<bos> + the first words of fresh grammar sentences: prompts the reference knows."""
    return [
        [grammar.BOS_ID, *grammar.encode(grammar.sample_sentence(rng)[:n_words])] for _ in range(n)
    ]


@dataclass
class Sampled:
    """One step's prompts, sampled responses and their scores, all on the device."""

    prompts: torch.Tensor  # [B, P]
    responses: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T] 1.0 on response tokens up to and including <eos>
    scores: torch.Tensor  # [B] raw reward
    prompt_mask: torch.Tensor | None = None  # [B, P] 0 on left padding (HF models)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # extra per-step series


class Trainer:
    """PPO on the shipped grammar LM. `trainer.hf.HFTrainer` swaps in a Hugging Face model by
    overriding the model-specific methods (build_models, sample, decode, model_info)."""

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        self.device = pick_device(cfg.device, self.dist.local_rank)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        # model: the policy with its value head; ref(idx, …) -> the reference's logits
        self.model, self.ref = self.build_models()
        self.policy: torch.nn.Module = self.model.policy  # generation needs only the LM
        self.train_model: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.controller: KLController = make_controller(
            cfg.kl_controller,
            cfg.kl_coef,
            cfg.target_kl,
            horizon=cfg.kl_horizon,
            factor=cfg.adaptive_factor,
            beta_min=cfg.beta_min,
            beta_max=cfg.beta_max,
        )
        self.hp = PPOHyper(
            cfg.ppo_epochs,
            cfg.num_minibatches,
            cfg.clip_range,
            cfg.clip_range_value,
            cfg.vf_coef,
            cfg.entropy_coef,
            cfg.max_grad_norm,
            cfg.temperature,
            cfg.micro_batch_size,
        )
        # Each rank samples different prompts and tokens; weights stay identical through DDP.
        stream_seed = cfg.seed * 1000 + self.dist.rank
        self.prompt_rng = random.Random(stream_seed)
        self.generator = torch.Generator(device=self.device).manual_seed(stream_seed)
        self.step_index = 0  # the next step to run
        self.last_rollout: Rollout | None = None

    # -- what depends on the model (HFTrainer overrides these) ----------------------------

    def build_models(self) -> tuple[torch.nn.Module, Any]:
        lm = load_pretrained(resolve_pretrained(self.cfg.pretrained), self.device)
        # The longest forward: <bos> + prompt words + all but the last response token.
        if self.cfg.prompt_words + self.cfg.max_new_tokens > lm.cfg.block_size:
            raise ConfigError(
                f"<bos> + {self.cfg.prompt_words} prompt words + max_new_tokens "
                f"{self.cfg.max_new_tokens} exceed the shipped LM's {lm.cfg.block_size} tokens"
            )
        self.reward_model = make_reward(self.cfg.reward, self.device)
        self.grammar_checker = SentimentReward(self.device)
        return PolicyWithValue(lm).to(self.device), frozen_copy(lm)

    def sample(self) -> Sampled:
        """Grammar prompts → responses of the policy → scores (no host sync)."""
        cfg = self.cfg
        prompts = torch.tensor(
            sample_prompts(self.prompt_rng, cfg.batch_size, cfg.prompt_words), device=self.device
        )
        responses, mask = generate(
            self.policy,
            prompts,
            cfg.max_new_tokens,
            self.generator,
            self.autocast,
            cfg.temperature,
            cfg.top_k,
            cfg.top_p,
        )
        scores = self.reward_model(prompts, responses, mask)
        stats = {
            "exclaim_frac": masked_mean((responses == grammar.EXCLAIM_ID).float(), mask),
            # Share of well-formed sentences: the seed's "forgetting how to language" signal.
            "valid_frac": self.grammar_checker.valid(prompts, responses).float().mean(),
        }
        return Sampled(prompts, responses, mask, scores, stats=stats)

    def decode(self, ids: list[int]) -> str:
        return grammar.decode(ids)

    def model_info(self) -> dict[str, Any]:
        """What run.json says about the model."""
        return {
            "pretrained_sha": _short_hash(resolve_pretrained(self.cfg.pretrained)),
            "model": {
                "path": self.cfg.pretrained,
                "parameters": parameter_count(self.policy),
                "trainable_parameters": parameter_count(self.model, trainable_only=True),
                "dtype": str(next(self.policy.parameters()).dtype).removeprefix("torch."),
                "compute_dtype": "bfloat16" if self.device.type == "cuda" else "float32",
                "reference": "frozen copy",
            },
        }

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        # bf16 on CUDA only; on CPU autocast is disabled (float32), same code path.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )

    # -- one PPO step ---------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        beta = self.controller.beta  # β of this step's penalty; the update applies next step
        self.model.eval()  # generation and scoring (no dropout either way; HF checkpointing off)
        s = self.sample()
        rollout = score_rollout(
            self.model,
            self.ref,
            s.prompts,
            s.responses,
            s.mask,
            s.scores,
            self.autocast,
            s.prompt_mask,
            cfg.temperature,
            cfg.micro_batch_size,
        )

        mask, scores = s.mask, s.scores
        penalty_kl = rollout.kl[cfg.kl_estimator]
        rewards = per_token_rewards(penalty_kl, mask, scores, beta)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.gae_lambda)
        advantages = masked_whiten(advantages, mask)
        self.model.train()
        train_stats = ppo_update(
            self.train_model,
            self.params,
            self.optimizer,
            rollout,
            advantages,
            returns,
            self.hp,
            self.generator,
            self.autocast,
        )

        # -- gather every statistic on the device, reduce across ranks, one host transfer --
        lengths = mask.sum(-1)
        seq_kl_mean = (penalty_kl * mask).sum(-1) / lengths.clamp_min(1)
        seq_kl_sum = (penalty_kl * mask).sum(-1)
        stats = {
            "kl_mean": seq_kl_mean.mean(),
            "reward_mean": scores.mean(),
            "reward_total": (scores - beta * seq_kl_sum).mean(),
            "kl_seq_mean": seq_kl_sum.mean(),
            **{
                f"kl_{k}": ((v * mask).sum(-1) / lengths.clamp_min(1)).mean()
                for k, v in rollout.kl.items()
            },
            "entropy": masked_mean(rollout.entropy, mask),
            "response_len": lengths.mean(),
            # Share that used every new token (verl's response_length/clip_ratio definition):
            # cut off at the limit, or ending on <eos> exactly there.
            "truncated_frac": (lengths >= mask.shape[-1]).float().mean(),
            **train_stats,
            **s.stats,
            "kl_max": seq_kl_mean.max(),
            "tokens": lengths.sum(),
        }
        values = self._reduce(stats)
        elapsed = time.perf_counter() - t0
        metrics = dict(values)
        metrics["tokens_per_s"] = metrics.pop("tokens") / max(elapsed, 1e-9)
        metrics["beta"] = beta
        if self.device.type == "cuda":  # the caching allocator's counter: no device sync
            metrics["cuda_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.controller.update(metrics["kl_mean"], n=cfg.batch_size * self.dist.world_size)
        self.last_rollout = rollout
        self.step_index += 1
        return metrics

    def _reduce(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        mean_keys = tuple(k for k in stats if k not in MAX_KEYS + SUM_KEYS)
        means = torch.stack([stats[k].float().reshape(()) for k in mean_keys])
        maxes = torch.stack([stats[k].float().reshape(()) for k in MAX_KEYS])
        sums = torch.stack([stats[k].float().reshape(()) for k in SUM_KEYS])
        if self.dist.world_size > 1:
            dist.all_reduce(means, op=dist.ReduceOp.SUM)
            means /= self.dist.world_size
            dist.all_reduce(maxes, op=dist.ReduceOp.MAX)
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        values = torch.cat([means, maxes, sums]).tolist()  # the step's one device→host sync
        return dict(zip(mean_keys + MAX_KEYS + SUM_KEYS, values, strict=True))

    # -- samples and checkpoints ----------------------------------------------------------

    def samples(self, n: int) -> list[dict[str, Any]]:
        """A few decoded responses of the last rollout (a second sync, every N steps only)."""
        r = self.last_rollout
        if r is None:
            return []
        prompts, responses = r.prompts[:n].tolist(), r.responses[:n].tolist()
        mask, scores = r.mask[:n].tolist(), r.scores[:n].tolist()
        prompt_mask = r.prompt_mask[:n].tolist() if r.prompt_mask is not None else None
        out = []
        for i, (p, y, m, s) in enumerate(zip(prompts, responses, mask, scores, strict=True)):
            if prompt_mask is not None:
                p = [tok for tok, keep in zip(p, prompt_mask[i], strict=True) if keep]
            kept = [tok for tok, keep in zip(y, m, strict=True) if keep]
            out.append(
                {"prompt": self.decode(p), "response": self.decode(kept), "reward": round(s, 4)}
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "next_step": self.step_index,
            "model": self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "controller": self.controller.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # HF generate samples from the global RNG
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "prompt_rng": self.prompt_rng.getstate(),
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_index = int(state["next_step"])
        unexpected = self.model.load_state_dict(state["model"], strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"checkpoint holds weights this model lacks: {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state["controller"])
        self.generator.set_state(state["generator"])
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.prompt_rng.setstate(state["prompt_rng"])
        if self.dist.rank != 0:
            # Rank 0 saved its own streams; the others re-derive distinct ones from the step.
            stream_seed = (self.cfg.seed * 1000 + self.dist.rank) * 100003 + self.step_index
            self.prompt_rng = random.Random(stream_seed)
            self.generator.manual_seed(stream_seed)
            torch.manual_seed(stream_seed)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint needs: the trainable ones (all of the grammar LM's; a
        LoRA run's adapters and value head — the frozen base is reloaded from its path)."""
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.model.state_dict().items() if k in trainable}

    def save_checkpoint(self, run_dir: Path) -> None:
        """Atomic (temp file + rename), like run.json: a crash never leaves half a checkpoint.
        Called on rank 0 only; weights and β are identical on every rank."""
        path = run_dir / CHECKPOINT_FILE
        tmp = path.with_suffix(".ckpt.tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
