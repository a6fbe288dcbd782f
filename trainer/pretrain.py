"""Pretrain the starting policy on grammar sentences: `python -m trainer.pretrain`.

Writes trainer/assets/policy.pt (shipped in git, a few hundred kB), which every RLHF run
loads as both its initial policy and its frozen reference. Deterministic for a given seed.
Takes a couple of minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer import grammar
from trainer.model import CausalLM, ModelConfig, save_pretrained

DEFAULT_PATH = Path(__file__).resolve().parent / "assets" / "policy.pt"


def make_batch(rng: random.Random, batch_size: int, block_size: int) -> torch.Tensor:
    """[B, block_size] of <bos> sentence <eos> <pad>…"""
    rows = []
    for _ in range(batch_size):
        ids = [grammar.BOS_ID, *grammar.encode(grammar.sample_sentence(rng)), grammar.EOS_ID]
        rows.append(ids + [grammar.PAD_ID] * (block_size - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


def pretrain(
    steps: int, batch_size: int, lr: float, seed: int, cfg: ModelConfig, log_every: int = 100
) -> CausalLM:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = CausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    t0 = time.perf_counter()
    for step in range(steps):
        # Cosine decay with a short warmup: the usual recipe, nothing tuned here.
        warm = min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        batch = make_batch(rng, batch_size, cfg.block_size)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(
            logits.reshape(-1, cfg.vocab_size),
            batch[:, 1:].reshape(-1),
            ignore_index=grammar.PAD_ID,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f}s")
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.pretrain", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-head", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    cfg = ModelConfig(
        vocab_size=grammar.VOCAB_SIZE,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )
    model = pretrain(args.steps, args.batch_size, args.lr, args.seed, cfg)
    meta = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "vocab": list(grammar.VOCAB),
    }
    save_pretrained(model, args.out, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
