"""Trainer throughput and the cost of watching it: `python benchmarks/bench_trainer.py`.

Measures, in one process on the same warm model (machines are noisy; only ratios measured in
the same run are meaningful):
  - steps/s and response tokens/s of the default config (PPO step incl. rollout and update);
  - logging overhead: RunWriter.log of a full step record, as a share of the step time;
  - KL-estimation overhead: computing all four estimators (k1, k2, k3, full) from the
    rollout's logits, as a share of the step time; plus the reference forward pass that any
    KL penalty needs.
Writes nothing outside a temporary directory. `--steps` and `--device` adjust the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.runlog import RunWriter
from trainer.config import TrainConfig
from trainer.kl import all_estimates
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
