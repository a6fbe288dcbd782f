"""Trainer throughput and the cost of watching it: `python benchmarks/bench_trainer.py`.

Measures, in one process on the same warm model (machines are noisy; only ratios measured in
the same run are meaningful):
  - steps/s and response tokens/s of the default config (PPO step incl. rollout and update);
  - logging overhead: RunWriter.log of a full step record, as a share of the step time;
  - KL-estimation overhead: computing all four estimators (k1, k2, k3, full) from the
    rollout's logits, as a share of the step time; plus the reference forward pass that any
    KL penalty needs;
  - a Hugging Face model (`--model`; by default the tiny 2-layer Llama of trainer/tiny.py,
    built in a temporary directory): step time, response tokens/s and peak memory (process
    RSS sampled by psutil on the CPU, torch.cuda.max_memory_allocated on CUDA) with a frozen
    reference copy, with LoRA (reference = adapters off), with LoRA and micro-batches, and
    with a reward model; each in its own process, so each peak is its own.
Writes nothing outside a temporary directory. `--steps`, `--device`, `--hf-steps` and
`--model`/`--reward-model` adjust the run; `--hf-only` skips the shipped model.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.runlog import RunWriter
from trainer.config import TrainConfig
from trainer.kl import all_estimates
from trainer.loop import make_trainer
from trainer.ppo import gather_logprobs, generate, response_logits, response_logits_lm
from trainer.train import Trainer


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per call over `repeat` calls."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


class PeakRSS:
    """Largest resident set size of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> PeakRSS:
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, process.memory_info().rss)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_hf(overrides: dict[str, Any], steps: int, warmup: int) -> dict[str, float]:
    """One Hugging Face configuration, in a fresh process: load, warm up, time `steps`."""
    cfg = TrainConfig(**{"run_dir": "unused", "steps": steps + warmup, **overrides})
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    rss_before = psutil.Process().memory_info().rss
    with PeakRSS() as rss:
        trainer = make_trainer(cfg)
        for _ in range(warmup):
            trainer.step()
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        step_times, tokens = [], 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            metrics = trainer.step()
            step_times.append(time.perf_counter() - t0)
            tokens += metrics["response_len"] * cfg.batch_size
    return {
        "step_s": statistics.median(step_times),
        "tokens_per_s": tokens / sum(step_times),
        "peak_rss_mb": rss.peak / 2**20,
        "rss_growth_mb": (rss.peak - rss_before) / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated(trainer.device) / 2**20 if cuda else 0.0,
        "response_len": metrics["response_len"],
        "threads": torch.get_num_threads(),
    }


def hf_section(args: argparse.Namespace, shipped_step_s: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model, reward = args.model, args.reward_model
        if not model:
            from trainer.tiny import build_tiny_models

            tiny_policy, tiny_reward = build_tiny_models(Path(tmp))
            model, reward = str(tiny_policy), reward or str(tiny_reward)
        base = {"model": model, "device": args.device, "torch_threads": args.threads}
        variants = {
            "frozen reference copy": {},
            "LoRA r=16 (reference = adapters off)": {"lora": True},
            "LoRA r=16, micro-batches of 8": {"lora": True, "micro_batch_size": 8},
            "frozen copy + reward model": {"reward_model": reward} if reward else None,
        }
        spawn = multiprocessing.get_context("spawn")  # a fresh process: its own peak
        results = {}
        for name, extra in variants.items():
            if extra is None:
                continue
            with spawn.Pool(1) as pool:
                results[name] = pool.apply(bench_hf, ({**base, **extra}, args.hf_steps, 2))
    cfg = TrainConfig()
    print(
        f"\nHugging Face model {args.model or 'trainer/tiny.py (2-layer, 64-wide Llama)'}, "
        f"device {args.device}, batch {cfg.batch_size} × ≤{cfg.max_new_tokens} tokens, "
        f"median of {args.hf_steps} steps after 2 warm-up steps, one process per line"
    )
    for name, r in results.items():
        ratio = f"  ×{r['step_s'] / shipped_step_s:4.2f} shipped" if shipped_step_s else ""
        memory = (
            f"CUDA peak {r['cuda_peak_mb']:7.0f} MB"
            if r["cuda_peak_mb"]
            else f"peak RSS {r['peak_rss_mb']:6.0f} MB (+{r['rss_growth_mb']:4.0f} MB)"
        )
        print(
            f"  {name:38s} {r['step_s'] * 1e3:7.1f} ms/step{ratio}  "
            f"{r['tokens_per_s']:6.0f} response tokens/s  {memory}  ({r['threads']} thr)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hf-steps", type=int, default=10, help="steps per HF configuration")
    parser.add_argument("--model", default="", help="local HF causal LM (default: tiny Llama)")
    parser.add_argument("--reward-model", default="", help="local HF reward model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--hf-only", action="store_true", help="skip the shipped model")
    args = parser.parse_args()
    shipped_step_s = None if args.hf_only else bench_shipped(args)
    hf_section(args, shipped_step_s)


def bench_shipped(args: argparse.Namespace) -> float:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(run_dir=tmp, device=args.device, steps=args.steps + args.warmup)
        trainer = Trainer(cfg)
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        for _ in range(args.warmup):
            trainer.step()
        step_times, tokens = [], []
        metrics: dict[str, float] = {}
        for _ in range(args.steps):
            t0 = time.perf_counter()
            metrics = trainer.step()  # ends in the step's one host sync
            step_times.append(time.perf_counter() - t0)
            tokens.append(metrics["response_len"] * cfg.batch_size)
        step_s = statistics.median(step_times)
        tok_s = sum(tokens) / sum(step_times)

        with RunWriter(Path(tmp) / "bench-run", config=cfg.to_dict()) as writer:
            counter = iter(range(10**9))
            log_s = timed(lambda: writer.log(next(counter), **metrics), repeat=2000)

        r = trainer.last_rollout
        assert r is not None

        with torch.no_grad():
            logits, _ = response_logits(trainer.model, r.prompts, r.responses, trainer.autocast)
            ref_logits = response_logits_lm(trainer.ref, r.prompts, r.responses, trainer.autocast)

        def timed_estimators(lg: torch.Tensor = logits, rl: torch.Tensor = ref_logits) -> None:
            with torch.no_grad():
                lp, rlp = gather_logprobs(lg, r.responses), gather_logprobs(rl, r.responses)
                all_estimates(lp, rlp, lg, rl)
            sync()

        def ref_forward() -> None:
            with torch.no_grad():
                response_logits_lm(trainer.ref, r.prompts, r.responses, trainer.autocast)
            sync()

        def rollout_generate() -> None:
            generate(
                trainer.policy, r.prompts, cfg.max_new_tokens, trainer.generator, trainer.autocast
            )
            sync()

        kl_s = timed(timed_estimators, repeat=200)
        gen_s = timed(rollout_generate, repeat=10)
        ref_s = timed(ref_forward, repeat=100)

    print(
        f"device {trainer.device}, torch threads {torch.get_num_threads()}, "
        f"batch {cfg.batch_size} × ≤{cfg.max_new_tokens} tokens, "
        f"{cfg.ppo_epochs} epochs × {cfg.num_minibatches} minibatches"
    )
    print(
        f"step time (median of {args.steps})   {step_s * 1e3:8.1f} ms   "
        f"{1 / step_s:6.2f} steps/s   {tok_s:8.0f} response tokens/s"
    )
    print(
        f"RunWriter.log per record        {log_s * 1e6:8.1f} µs   "
        f"{100 * log_s / step_s:6.3f} % of a step (goal ≤ 1 %)"
    )
    print(
        f"KL estimators k1,k2,k3,full     {kl_s * 1e3:8.3f} ms   "
        f"{100 * kl_s / step_s:6.3f} % of a step"
    )
    print(
        f"reference forward (any penalty) {ref_s * 1e3:8.3f} ms   "
        f"{100 * ref_s / step_s:6.3f} % of a step"
    )
    print(
        f"generation ({cfg.max_new_tokens} tokens, sampling)  {gen_s * 1e3:8.1f} ms   "
        f"{100 * gen_s / step_s:6.1f} % of a step (the rest: scoring + PPO update)"
    )
    return step_s


if __name__ == "__main__":
    main()
