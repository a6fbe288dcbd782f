"""PPO for a language model with a per-token KL penalty (Ziegler et al. 2019; Stiennon 2020).

One step: sample responses from π at temperature 1 (no top-k/top-p: any truncation makes the
samples come from a different distribution than the log π we score, biasing the KL estimate),
score them, build per-token rewards

    r_t = −β·KL_t            for every response token t
    r_T += score(x, y)       on the last response token (the <eos>, or the last one generated)

then GAE (Schulman 2016) and a few epochs of clipped-objective minibatch updates (Schulman
2017), with a clipped value loss and gradient-norm clipping, as in cleanRL's ppo.py.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer import grammar
from trainer.kl import all_estimates, masked_seq_mean

Autocast = Callable[[], AbstractContextManager[object]]


@dataclass
class Rollout:
    prompts: torch.Tensor  # [B, P]
    responses: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T] float, 1 on response tokens up to and including <eos>
    logprobs: torch.Tensor  # [B, T] log π_old(y_t)
    ref_logprobs: torch.Tensor  # [B, T] log π_ref(y_t)
    values: torch.Tensor  # [B, T]
    kl: dict[str, torch.Tensor]  # every estimator, [B, T], masked
    entropy: torch.Tensor  # [B, T] policy entropy at each response position, masked
    scores: torch.Tensor  # [B] raw reward-model score


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean).square(), mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: torch.Tensor,
    max_new_tokens: int,
    generator: torch.Generator,
    autocast: Autocast,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations at temperature 1. Returns responses [B, T] (<pad> after <eos>)
    and their mask. Always runs T steps: stopping early would need a device→host sync."""
    seq = prompts
    done = torch.zeros(prompts.shape[0], dtype=torch.bool, device=prompts.device)
    tokens, alive = [], []
    for _ in range(max_new_tokens):
        with autocast():
            logits = model(seq)
        probs = F.softmax(logits[:, -1].float(), dim=-1)
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        tok = torch.where(done, torch.full_like(tok, grammar.PAD_ID), tok)
        alive.append(~done)
        tokens.append(tok)
        done = done | (tok == grammar.EOS_ID)
        seq = torch.cat([seq, tok[:, None]], dim=1)
    return torch.stack(tokens, 1), torch.stack(alive, 1).float()


def response_logits(
    model: nn.Module, prompts: torch.Tensor, responses: torch.Tensor, autocast: Autocast
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B, T, V] and values [B, T] at the positions that predict each response token
    (`model` is a PolicyWithValue, possibly DDP-wrapped)."""
    seq = torch.cat([prompts, responses], dim=1)
    with autocast():
        logits, values = model(seq[:, :-1])
    p = prompts.shape[1] - 1
    return logits[:, p:], values[:, p:]


def response_logits_lm(
    lm: nn.Module, prompts: torch.Tensor, responses: torch.Tensor, autocast: Autocast
) -> torch.Tensor:
    """Logits [B, T, V] of a plain CausalLM (the reference) at the response positions."""
    seq = torch.cat([prompts, responses], dim=1)
    with autocast():
        logits = lm(seq[:, :-1])
    return logits[:, prompts.shape[1] - 1 :]


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def score_rollout(
    policy: nn.Module,
    ref: nn.Module,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor,
    scores: torch.Tensor,
    autocast: Autocast,
) -> Rollout:
    logits, values = response_logits(policy, prompts, responses, autocast)
    ref_logits = response_logits_lm(ref, prompts, responses, autocast)
    logprobs = gather_logprobs(logits, responses)
    ref_logprobs = gather_logprobs(ref_logits, responses)
    kl = {k: v * mask for k, v in all_estimates(logprobs, ref_logprobs, logits, ref_logits).items()}
    return Rollout(
        prompts,
        responses,
        mask,
        logprobs,
        ref_logprobs,
        values * mask,
        kl,
        entropy_from_logits(logits) * mask,
        scores,
    )


def per_token_rewards(
    kl_penalty: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, beta: float
) -> torch.Tensor:
    """r_t = −β·KL_t on every response token, plus the score on the last one."""
    rewards = -beta * kl_penalty * mask
    last = (mask.sum(-1).long() - 1).clamp_min(0)
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; returns (advantages, returns).
    Positions after <eos> have mask 0: they neither bootstrap nor receive credit."""
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m
        next_value = values[:, t] * m
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class PPOHyper:
    epochs: int = 4
    num_minibatches: int = 4
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0


def ppo_update(
    model: nn.Module,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    hp: PPOHyper,
    generator: torch.Generator,
    autocast: Autocast,
) -> dict[str, torch.Tensor]:
    """Clipped PPO epochs over minibatches. Statistics stay on the device (no .item())."""
    b = rollout.prompts.shape[0]
    mb_size = max(1, b // hp.num_minibatches)
    totals: dict[str, torch.Tensor] = {}
    n_updates = 0
    for _ in range(hp.epochs):
        perm = torch.randperm(b, generator=generator, device=generator.device)
        for start in range(0, b - mb_size + 1, mb_size):
            idx = perm[start : start + mb_size].to(rollout.prompts.device)
            m = rollout.mask[idx]
            logits, vpred = response_logits(
                model, rollout.prompts[idx], rollout.responses[idx], autocast
            )
            logp = gather_logprobs(logits, rollout.responses[idx])
            log_ratio = logp - rollout.logprobs[idx]
            ratio = log_ratio.exp()
            adv = advantages[idx]
            clipped_ratio = ratio.clamp(1 - hp.clip_range, 1 + hp.clip_range)
            pg_loss = masked_mean(torch.maximum(-adv * ratio, -adv * clipped_ratio), m)
            old_v = rollout.values[idx]
            v_clipped = old_v + (vpred - old_v).clamp(-hp.clip_range_value, hp.clip_range_value)
            ret = returns[idx]
            vf_loss = 0.5 * masked_mean(
                torch.maximum((vpred - ret).square(), (v_clipped - ret).square()), m
            )
            entropy = masked_mean(entropy_from_logits(logits), m)
            loss = pg_loss + hp.vf_coef * vf_loss - hp.entropy_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats = {
                    "policy_loss": pg_loss,
                    "value_loss": vf_loss,
                    "clipfrac": masked_mean(((ratio - 1).abs() > hp.clip_range).float(), m),
                    # KL(π_old ‖ π_new) by k3 over tokens sampled from π_old (as cleanRL)
                    "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, m),
                    "grad_norm": grad_norm,
                }
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0) + v.detach().float()
            n_updates += 1
    return {k: v / n_updates for k, v in totals.items()}


def rollout_kl_stats(rollout: Rollout, penalty_estimator: str) -> dict[str, torch.Tensor]:
    """Per-sequence KL means and sums (all on device)."""
    seq_mean = masked_seq_mean(rollout.kl[penalty_estimator], rollout.mask)
    return {
        "kl_seq_means": seq_mean,
        "kl_seq_sums": rollout.kl[penalty_estimator].sum(-1),
        **{f"kl_{k}": masked_seq_mean(v, rollout.mask).mean() for k, v in rollout.kl.items()},
    }
