"""Per-token KL(π‖π_ref) estimators (Schulman, "Approximating KL Divergence", 2020).

Tokens are sampled from the policy π. With log r = log π(a|s) − log π_ref(a|s):

  k1   = log r                       unbiased, high variance, can be negative per token
  k2   = ½ (log r)²                  biased (low bias near π ≈ π_ref), never negative
  k3   = (1/r − 1) + log r           unbiased, never negative, low variance
  full = Σ_v π(v|s) (log π(v|s) − log π_ref(v|s))   exact, from both models' logits

On k3: Schulman writes k3 = (ρ − 1) − log ρ with ρ = π_ref/π (the ratio *he* calls r, which is
the reciprocal of ours). With r = π/π_ref that is ρ = 1/r and −log ρ = +log r, so
k3 = exp(−log r) − 1 + log r. It is ≥ 0 because eˣ ≥ 1 + x (take x = −log r), and unbiased
because E_π[π_ref/π] = 1.

Which one feeds the penalty is `TrainConfig.kl_estimator` (default k1: r − β·log r per token
is the reward whose expectation is the KL-regularised objective of Ziegler et al. 2019; k3 or
full in the *reward* give a biased gradient, they are offered for comparison). All four are
logged every step regardless (kl_k1, kl_k2, kl_k3, kl_full), so runs can be compared.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ESTIMATORS = ("k1", "k2", "k3", "full")


def k1(log_ratio: torch.Tensor) -> torch.Tensor:
    return log_ratio


def k2(log_ratio: torch.Tensor) -> torch.Tensor:
    return 0.5 * log_ratio.square()


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    # expm1 keeps precision when π ≈ π_ref (log r ≈ 0), the usual case at the start of a run.
    return torch.expm1(-log_ratio) + log_ratio


def full_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(π(·|s) ‖ π_ref(·|s)) per position: [..., V] logits -> [...]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


SAMPLE_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": k1,
    "k2": k2,
    "k3": k3,
}


def all_estimates(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Every estimator per token, same shape as `logprobs` ([B, T])."""
    log_ratio = logprobs - ref_logprobs
    out = {name: fn(log_ratio) for name, fn in SAMPLE_ESTIMATORS.items()}
    out["full"] = full_kl(logits, ref_logits)
    return out


def masked_seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over response tokens: [B, T] -> [B]."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1)
