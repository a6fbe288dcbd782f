"""A small causal transformer LM with a scalar value head (nanoGPT-style, pre-LayerNorm).

`CausalLM` is the language model (policy; the frozen reference is a deep copy of the
starting policy, `frozen_copy`). `PolicyWithValue` adds the value head PPO needs. Dropout is
0 everywhere: dropout makes log π noisy between rollout and update, corrupting the KL estimate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    block_size: int = 32
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Trunk(nn.Module):
    """Token + position embeddings, transformer blocks, final LayerNorm: idx -> hidden."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.apply(_init_weights)
        # GPT-2's scaled init of residual projections keeps early training stable.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.cfg.block_size}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


class CausalLM(nn.Module):
    """The language model: idx [B, T] -> next-token logits [B, T, V] (float32)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        _init_weights(self.lm_head)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # Log-probs and KL are computed in float32 even under bf16 autocast.
        return self.lm_head(self.trunk(idx)).float()


class PolicyWithValue(nn.Module):
    """The policy LM plus a value head: forward(idx) -> (logits [B,T,V], values [B,T]).

    The value head sits on its own copy of the pretrained trunk (as InstructGPT's separate
    value model) rather than on the policy's: with a shared trunk the value loss, which is
    large whenever the KL penalty bites, drowns the policy gradient and wrecks the LM.
    """

    def __init__(self, policy: CausalLM) -> None:
        super().__init__()
        self.cfg = policy.cfg
        self.policy = policy
        self.value_trunk = copy.deepcopy(policy.trunk)
        self.value_head = nn.Linear(policy.cfg.n_embd, 1)
        # A zero value head starts PPO with V = 0 instead of noise.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.value_head(self.value_trunk(idx)).squeeze(-1).float()
        return self.policy(idx), values


M = TypeVar("M", bound=nn.Module)


def frozen_copy(model: M) -> M:
    """The reference policy: same weights, no gradients, never updated."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def save_pretrained(model: CausalLM, path: Path, meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"model_config": asdict(model.cfg), "state_dict": state, "meta": meta}, path)


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_pretrained(path: Path, device: torch.device) -> CausalLM:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = CausalLM(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device)
