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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from monitor.runlog import RunWriter
from trainer import grammar
from trainer.config import TrainConfig, resolve_pretrained
from trainer.controllers import KLController, make_controller
from trainer.model import PolicyWithValue, frozen_copy, load_pretrained
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

# Order of the packed per-step statistics. MEAN_KEYS are averaged across ranks, MAX_KEYS
# take the maximum. Each rank holds the same number of sequences, so mean of means is exact.
MEAN_KEYS = (
    "kl_mean",
    "reward_mean",
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
    "exclaim_frac",
    "valid_frac",
)
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


class Trainer:
    def __init__(self, cfg: TrainConfig, dist_info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        self.device = pick_device(cfg.device, self.dist.local_rank)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        lm = load_pretrained(resolve_pretrained(cfg.pretrained), self.device)
        self.ref = frozen_copy(lm)
        self.model = PolicyWithValue(lm).to(self.device)
        self.policy = self.model.policy  # generation needs only the LM
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
        self.reward_model = make_reward(cfg.reward, self.device)
        self.grammar_checker = SentimentReward(self.device)
        self.hp = PPOHyper(
            cfg.ppo_epochs,
            cfg.num_minibatches,
            cfg.clip_range,
            cfg.clip_range_value,
            cfg.vf_coef,
            cfg.entropy_coef,
            cfg.max_grad_norm,
        )
        # Each rank samples different prompts and tokens; weights stay identical through DDP.
        stream_seed = cfg.seed * 1000 + self.dist.rank
        self.prompt_rng = random.Random(stream_seed)
        self.generator = torch.Generator(device=self.device).manual_seed(stream_seed)
        self.step_index = 0  # the next step to run
        self.last_rollout: Rollout | None = None

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
        prompts = torch.tensor(
            sample_prompts(self.prompt_rng, cfg.batch_size, cfg.prompt_words), device=self.device
        )
        responses, mask = generate(
            self.policy, prompts, cfg.max_new_tokens, self.generator, self.autocast
        )
        scores = self.reward_model(prompts, responses, mask)
        rollout = score_rollout(
            self.model, self.ref, prompts, responses, mask, scores, self.autocast
        )

        penalty_kl = rollout.kl[cfg.kl_estimator]
        rewards = per_token_rewards(penalty_kl, mask, scores, beta)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.gae_lambda)
        advantages = masked_whiten(advantages, mask)
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
            **train_stats,
            "exclaim_frac": masked_mean((responses == grammar.EXCLAIM_ID).float(), mask),
            "valid_frac": self._valid_fraction(prompts, responses, mask),
            "kl_max": seq_kl_mean.max(),
            "tokens": lengths.sum(),
        }
        values = self._reduce(stats)
        elapsed = time.perf_counter() - t0
        metrics = dict(values)
        metrics["tokens_per_s"] = metrics.pop("tokens") / max(elapsed, 1e-9)
        metrics["beta"] = beta
        self.controller.update(metrics["kl_mean"], n=cfg.batch_size * self.dist.world_size)
        self.last_rollout = rollout
        self.step_index += 1
        return metrics

    def _valid_fraction(
        self, prompts: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Share of responses that complete a well-formed sentence: the seed's "forgetting
        how to language" signal, logged whatever the reward."""
        return self.grammar_checker.valid(prompts, responses).float().mean()

    def _reduce(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        means = torch.stack([stats[k].float().reshape(()) for k in MEAN_KEYS])
        maxes = torch.stack([stats[k].float().reshape(()) for k in MAX_KEYS])
        sums = torch.stack([stats[k].float().reshape(()) for k in SUM_KEYS])
        if self.dist.world_size > 1:
            dist.all_reduce(means, op=dist.ReduceOp.SUM)
            means /= self.dist.world_size
            dist.all_reduce(maxes, op=dist.ReduceOp.MAX)
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        values = torch.cat([means, maxes, sums]).tolist()  # the step's one device→host sync
        return dict(zip(MEAN_KEYS + MAX_KEYS + SUM_KEYS, values, strict=True))

    # -- samples and checkpoints ----------------------------------------------------------

    def samples(self, n: int) -> list[dict[str, Any]]:
        """A few decoded responses of the last rollout (a second sync, every N steps only)."""
        r = self.last_rollout
        if r is None:
            return []
        prompts, responses = r.prompts[:n].tolist(), r.responses[:n].tolist()
        mask, scores = r.mask[:n].tolist(), r.scores[:n].tolist()
        out = []
        for p, y, m, s in zip(prompts, responses, mask, scores, strict=True):
            kept = [tok for tok, keep in zip(y, m, strict=True) if keep]
            out.append(
                {
                    "prompt": grammar.decode(p),
                    "response": grammar.decode(kept),
                    "reward": round(s, 4),
                }
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "next_step": self.step_index,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "controller": self.controller.state_dict(),
            "generator": self.generator.get_state(),
            "prompt_rng": self.prompt_rng.getstate(),
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_index = int(state["next_step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state["controller"])
        self.generator.set_state(state["generator"])
        self.prompt_rng.setstate(state["prompt_rng"])
        if self.dist.rank != 0:
            # Rank 0 saved its own streams; the others re-derive distinct ones from the step.
            stream_seed = (self.cfg.seed * 1000 + self.dist.rank) * 100003 + self.step_index
            self.prompt_rng = random.Random(stream_seed)
            self.generator.manual_seed(stream_seed)

    def save_checkpoint(self, run_dir: Path) -> None:
        """Atomic (temp file + rename), like run.json: a crash never leaves half a checkpoint.
        Called on rank 0 only; weights and β are identical on every rank."""
        path = run_dir / CHECKPOINT_FILE
        tmp = path.with_suffix(".ckpt.tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def run(
    cfg: TrainConfig,
    *,
    command: str,
    resume_state: dict[str, Any] | None = None,
    quiet: bool = False,
    dist_info: DistInfo | None = None,
) -> Path:
    """Train `cfg.steps` steps into `cfg.run_dir`, appending to it when resuming."""
    dist_info = dist_info or DistInfo()
    run_dir = Path(cfg.run_dir)
    trainer = Trainer(cfg, dist_info)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    if not dist_info.is_main:
        while trainer.step_index < cfg.steps:
            trainer.step()
        return run_dir

    info = {
        "world_size": dist_info.world_size,
        "device": str(trainer.device),
        "pretrained_sha": _short_hash(resolve_pretrained(cfg.pretrained)),
    }
    with RunWriter(run_dir, config=cfg.to_dict(), extra_info=info) as writer:
        history = list(writer.info.get("command_history", []))
        writer.set_info(command=command, command_history=[*history, command])
        bar = tqdm(
            total=cfg.steps,
            initial=trainer.step_index,
            disable=quiet,
            dynamic_ncols=True,
            unit="step",
        )
        try:
            while trainer.step_index < cfg.steps:
                step = trainer.step_index
                metrics = trainer.step()
                writer.log(step, **metrics)
                if step % cfg.samples_every == 0 and cfg.num_samples:
                    writer.log_samples(step, trainer.samples(cfg.num_samples))
                if trainer.step_index % cfg.checkpoint_every == 0:
                    trainer.save_checkpoint(run_dir)
                bar.update(1)
                bar.set_postfix(
                    kl=f"{metrics['kl_mean']:.4f}",
                    beta=f"{metrics['beta']:.3f}",
                    reward=f"{metrics['reward_mean']:.3f}",
                    refresh=False,
                )
        except KeyboardInterrupt:
            trainer.save_checkpoint(run_dir)  # so that --resume picks up where Ctrl-C stopped
            raise
        finally:
            bar.close()
        trainer.save_checkpoint(run_dir)
    return run_dir


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
