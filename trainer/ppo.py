"""PPO for a language model with a per-token KL penalty (Ziegler et al. 2019; Stiennon 2020).

One step: sample responses from π (temperature 1 and no top-k/top-p by default: truncation makes
the samples come from a different distribution than the log π we score, biasing the KL
estimate; a temperature τ ≠ 1 is applied to the scored logits too), score them, build
per-token rewards

    r_t = −β·KL_t            for every response token t
    r_T += score(x, y)       on the last response token (the <eos>, or the last one generated)

then GAE (Schulman 2016) and a few epochs of clipped-objective minibatch updates (Schulman
2017), with a clipped value loss and gradient-norm clipping, as in cleanRL's ppo.py.

Models are called as `model(idx)` (the grammar LM: prompts never padded) or, when the rollout
has a prompt mask (left-padded prompts of a Hugging Face model), `model(idx, attention_mask,
keep)`, which returns only the last `keep` positions. `micro_batch_size` splits every forward
(and the update's backward, by gradient accumulation) into pieces that fit memory; the losses
are exact token means over the whole minibatch either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer import grammar
from trainer.kl import ESTIMATORS, all_estimates

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
    prompt_mask: torch.Tensor | None = None  # [B, P] 0 on left padding; None: never padded


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean).square(), mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def chunks(n: int, size: int) -> list[slice]:
    """[0, n) in pieces of `size` (0: one piece)."""
    size = size or n
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def warp_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Temperature, then top-k and top-p (nucleus) truncation, as HF's logits warpers."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the smallest head with mass ≥ top_p stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: torch.Tensor,
    max_new_tokens: int,
    generator: torch.Generator,
    autocast: Autocast,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations of the grammar LM. Returns responses [B, T] (<pad> after <eos>)
    and their mask. Always runs T steps: stopping early would need a device→host sync."""
    seq = prompts
    done = torch.zeros(prompts.shape[0], dtype=torch.bool, device=prompts.device)
    tokens, alive = [], []
    for _ in range(max_new_tokens):
        with autocast():
            logits = model(seq)
        probs = F.softmax(warp_logits(logits[:, -1].float(), temperature, top_k, top_p), dim=-1)
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        tok = torch.where(done, torch.full_like(tok, grammar.PAD_ID), tok)
        alive.append(~done)
        tokens.append(tok)
        done = done | (tok == grammar.EOS_ID)
        seq = torch.cat([seq, tok[:, None]], dim=1)
    return torch.stack(tokens, 1), torch.stack(alive, 1).float()


def _forward(
    model: Callable[..., Any],
    prompts: torch.Tensor,
    responses: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    autocast: Autocast,
) -> Any:
    seq = torch.cat([prompts, responses], dim=1)[:, :-1]
    with autocast():
        if prompt_mask is None:
            return model(seq)
        attention = torch.cat([prompt_mask, torch.ones_like(responses)], dim=1)[:, :-1]
        return model(seq, attention, responses.shape[1])


def response_logits(
    model: nn.Module,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    autocast: Autocast,
    prompt_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B, T, V] and values [B, T] at the positions that predict each response token
    (`model` is a policy with value head, possibly DDP-wrapped), logits at `temperature`."""
    logits, values = _forward(model, prompts, responses, prompt_mask, autocast)
    t = responses.shape[1]
    logits = logits[:, -t:]
    return (logits / temperature if temperature != 1.0 else logits), values[:, -t:]


def response_logits_lm(
    lm: Callable[..., torch.Tensor],
    prompts: torch.Tensor,
    responses: torch.Tensor,
    autocast: Autocast,
    prompt_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logits [B, T, V] of a plain LM (the reference) at the response positions."""
    logits = _forward(lm, prompts, responses, prompt_mask, autocast)[:, -responses.shape[1] :]
    return logits / temperature if temperature != 1.0 else logits


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def score_rollout(
    policy: nn.Module,
    ref: Callable[..., torch.Tensor],
    prompts: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor,
    scores: torch.Tensor,
    autocast: Autocast,
    prompt_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    micro_batch_size: int = 0,
) -> Rollout:
    """log π_old, log π_ref, values, every KL estimate and the entropy of each response token."""
    parts: list[tuple[torch.Tensor, ...]] = []
    for sl in chunks(prompts.shape[0], micro_batch_size):
        args = (prompts[sl], responses[sl], autocast, _rows(prompt_mask, sl), temperature)
        logits, values = response_logits(policy, *args)
        ref_logits = response_logits_lm(ref, *args)
        logprobs = gather_logprobs(logits, responses[sl])
        ref_logprobs = gather_logprobs(ref_logits, responses[sl])
        kl = all_estimates(logprobs, ref_logprobs, logits, ref_logits)
        entropy = entropy_from_logits(logits)
        parts.append((logprobs, ref_logprobs, values, entropy, *(kl[k] for k in ESTIMATORS)))
    logprobs, ref_logprobs, values, entropy, *kls = (torch.cat(x) for x in zip(*parts, strict=True))
    return Rollout(
        prompts,
        responses,
        mask,
        logprobs,
        ref_logprobs,
        values * mask,
        {k: v * mask for k, v in zip(ESTIMATORS, kls, strict=True)},
        entropy * mask,
        scores,
        prompt_mask,
    )


def _rows(x: torch.Tensor | None, rows: slice | torch.Tensor) -> torch.Tensor | None:
    return None if x is None else x[rows]


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
    temperature: float = 1.0
    micro_batch_size: int = 0  # 0: the whole minibatch in one forward/backward


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
            # Every loss is a token mean over the whole minibatch: its micro-batches add up
            # their token sums, each divided by the minibatch's token count.
            n_tokens = rollout.mask[idx].sum().clamp_min(1)
            pieces = chunks(mb_size, hp.micro_batch_size)
            optimizer.zero_grad(set_to_none=True)
            stats: dict[str, torch.Tensor] = {}
            for i, sl in enumerate(pieces):
                # Under DDP, gradients are all-reduced once, on the minibatch's last backward.
                no_sync = getattr(model, "no_sync", None)
                last = i == len(pieces) - 1
                with contextlib.nullcontext() if last or no_sync is None else no_sync():
                    loss, micro = micro_batch_loss(
                        model, rollout, idx[sl], advantages, returns, n_tokens, hp, autocast
                    )
                    loss.backward()
                for k, v in micro.items():
                    stats[k] = stats.get(k, 0) + v
            grad_norm = torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            optimizer.step()
            stats["grad_norm"] = grad_norm
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v.detach().float()
            n_updates += 1
    return {k: v / n_updates for k, v in totals.items()}


def micro_batch_loss(
    model: nn.Module,
    rollout: Rollout,
    idx: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    n_tokens: torch.Tensor,
    hp: PPOHyper,
    autocast: Autocast,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped PPO loss of the sequences `idx`, as their share of the minibatch's token
    mean (÷ n_tokens), and its statistics in the same units."""

    def token_mean(x: torch.Tensor) -> torch.Tensor:
        return (x * m).sum() / n_tokens

    m = rollout.mask[idx]
    prompt_mask = _rows(rollout.prompt_mask, idx)
    logits, vpred = response_logits(
        model, rollout.prompts[idx], rollout.responses[idx], autocast, prompt_mask, hp.temperature
    )
    logp = gather_logprobs(logits, rollout.responses[idx])
    log_ratio = logp - rollout.logprobs[idx]
    ratio = log_ratio.exp()
    adv = advantages[idx]
    clipped_ratio = ratio.clamp(1 - hp.clip_range, 1 + hp.clip_range)
    pg_loss = token_mean(torch.maximum(-adv * ratio, -adv * clipped_ratio))
    old_v = rollout.values[idx]
    v_clipped = old_v + (vpred - old_v).clamp(-hp.clip_range_value, hp.clip_range_value)
    ret = returns[idx]
    vf_loss = 0.5 * token_mean(torch.maximum((vpred - ret).square(), (v_clipped - ret).square()))
    entropy = token_mean(entropy_from_logits(logits))
    loss = pg_loss + hp.vf_coef * vf_loss - hp.entropy_coef * entropy
    with torch.no_grad():
        stats = {
            "policy_loss": pg_loss,
            "value_loss": vf_loss,
            "clipfrac": token_mean(((ratio - 1).abs() > hp.clip_range).float()),
            # KL(π_old ‖ π_new) by k3 over tokens sampled from π_old (as cleanRL)
            "approx_kl": token_mean(torch.expm1(log_ratio) - log_ratio),
        }
    return loss, {k: v.detach() for k, v in stats.items()}
