"""`python -m trainer`: PPO with a KL penalty on a tiny grammar LM (or your own Hugging Face
model), streaming to a run dir.

Examples:
  python -m trainer --steps 500 --kl-controller adaptive --target-kl 0.05
  python -m trainer --kl-controller none --reward exclaim     # watch it hack the reward
  torchrun --nproc-per-node 2 -m trainer --steps 50           # data-parallel (gloo on CPU)
  python -m trainer --run-dir runs/x --resume --steps 2000    # continue a run
  python -m trainer --model PATH --lora --reward-model RM_PATH --prompts prompts.jsonl
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from trainer.config import (
    MODEL_DTYPES,
    ConfigError,
    TrainConfig,
    build_config,
    load_config_file,
    resolve_pretrained,
)
from trainer.controllers import CONTROLLERS
from trainer.kl import ESTIMATORS
from trainer.rewards import REWARDS

# CLI flag -> config field. Defaults are suppressed so only flags actually given override.
FLAGS: dict[str, tuple[str, type, str]] = {
    "--run-dir": ("run_dir", str, "run directory (default runs/<timestamp>-<controller>)"),
    "--steps": ("steps", int, "total PPO steps"),
    "--kl-controller": ("kl_controller", str, "how β is chosen each step"),
    "--kl-coef": ("kl_coef", float, "initial β (fixed β for --kl-controller fixed)"),
    "--target-kl": ("target_kl", float, "per-token mean KL the controller aims at"),
    "--kl-estimator": ("kl_estimator", str, "per-token KL estimate that feeds the penalty"),
    "--reward": ("reward", str, "built-in reward (see --reward-model for your own)"),
    "--device": ("device", str, "auto: cuda if available (bf16 autocast), else cpu"),
    "--seed": ("seed", int, "random seed"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--batch-size": ("batch_size", int, "prompts per step per process"),
    "--max-new-tokens": ("max_new_tokens", int, "response length limit"),
    "--temperature": ("temperature", float, "sampling temperature (log π is scored at it too)"),
    "--top-p": ("top_p", float, "nucleus sampling (1: off; truncation biases the KL)"),
    "--top-k": ("top_k", int, "top-k sampling (0: off; truncation biases the KL)"),
    "--micro-batch-size": ("micro_batch_size", int, "sequences per forward/backward (0: all)"),
    "--model": ("model", str, "local Hugging Face causal-LM directory (default: the shipped LM)"),
    "--lora-r": ("lora_r", int, "LoRA rank (with --lora)"),
    "--model-dtype": ("model_dtype", str, "dtype the weights are loaded in (--model)"),
    "--reward-model": ("reward_model", str, "local sequence-classification model as reward"),
    "--reward-label": ("reward_label", str, "its label (name or index) to score"),
    "--prompts": ("prompts", str, "JSONL (field prompt) / Parquet / text file of prompts"),
    "--max-prompt-tokens": ("max_prompt_tokens", int, "longer prompts keep their last tokens"),
}
# On/off flags (store_true) -> config field.
SWITCHES: dict[str, tuple[str, str]] = {
    "--lora": ("lora", "LoRA adapters (peft); the reference = the model with adapters off"),
    "--gradient-checkpointing": ("gradient_checkpointing", "recompute activations (memory)"),
}
CHOICES = {
    "kl_controller": CONTROLLERS,
    "kl_estimator": ESTIMATORS,
    "reward": REWARDS,
    "device": ("auto", "cpu", "cuda"),
    "model_dtype": MODEL_DTYPES,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, (dest, kind, help_text) in FLAGS.items():
        parser.add_argument(
            flag,
            dest=dest,
            type=kind,
            choices=CHOICES.get(dest),
            default=argparse.SUPPRESS,
            help=help_text,
        )
    for flag, (dest, help_text) in SWITCHES.items():
        parser.add_argument(
            flag, dest=dest, action="store_true", default=argparse.SUPPRESS, help=help_text
        )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or JSON file with any TrainConfig field (flags win)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def command_line(argv: list[str]) -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc-per-node {world} -m trainer" if world > 1 else "python -m trainer"
    return " ".join([launcher, *map(shlex.quote, argv)]).strip()


def resolve(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[TrainConfig, dict[str, Any] | None]:
    dests = [dest for dest, *_ in FLAGS.values()] + [dest for dest, _ in SWITCHES.values()]
    flags = {dest: getattr(args, dest) for dest in dests if hasattr(args, dest)}
    file_values = load_config_file(args.config) if args.config else {}
    base = TrainConfig().to_dict()
    resume_state = None
    if args.resume:
        run_dir = flags.get("run_dir") or file_values.get("run_dir")
        if not run_dir:
            parser.error("--resume needs --run-dir (the run to continue)")
        from trainer.train import CHECKPOINT_FILE, load_checkpoint

        if not (Path(run_dir) / CHECKPOINT_FILE).is_file():
            parser.error(f"--resume: no {CHECKPOINT_FILE} in {run_dir}")
        resume_state = load_checkpoint(Path(run_dir))
        base.update(resume_state["config"])
    cfg = build_config(base, file_values, flags)
    if not cfg.run_dir:
        cfg.run_dir = f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.kl_controller}"
    for name in ("model", "reward_model"):
        path = getattr(cfg, name)
        if path and not (Path(path) / "config.json").is_file():
            parser.error(f"{name} {path}: not a local Hugging Face model dir (no config.json)")
    if cfg.prompts and not Path(cfg.prompts).is_file():
        parser.error(f"prompts file {cfg.prompts} not found")
    if not cfg.model and not resolve_pretrained(cfg.pretrained).is_file():
        parser.error(
            f"pretrained policy {cfg.pretrained} not found "
            "(make it with: python -m trainer.pretrain)"
        )
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and not args.resume and (Path(cfg.run_dir) / "metrics.jsonl").exists():
        parser.error(
            f"{cfg.run_dir} already holds a run; pass --resume to continue it "
            "or choose another --run-dir"
        )
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: CUDA is not available on this machine")
    return cfg, resume_state


def _wait_for_all_ranks() -> None:
    """Ranks leave together: a rank that tears down gloo while rank 0 still writes its last
    checkpoint aborts ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _interrupt_once(signum: int, frame: object) -> None:
    """First Ctrl-C / SIGTERM: stop training and clean up (checkpoint, run.json status).
    Later ones are ignored, so a second signal cannot cut that clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg, resume_state = resolve(args, parser)
    except ConfigError as e:
        parser.error(str(e))
    from trainer.train import init_distributed, run

    dist_info = init_distributed(cfg.device)
    # `make run` stops its background trainer with SIGTERM: treat it like Ctrl-C, so the run
    # gets a checkpoint and run.json a final status instead of "running" forever.
    signal.signal(signal.SIGTERM, _interrupt_once)
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        run_dir = run(
            cfg,
            command=command_line(argv),
            resume_state=resume_state,
            quiet=args.quiet,
            dist_info=dist_info,
        )
        _wait_for_all_ranks()
    except ConfigError as e:  # found while loading: a reward label, a prompts file, …
        parser.error(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted; checkpoint saved, continue with --resume", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if dist_info.is_main and not args.quiet:
        print(f"run written to {run_dir}", file=sys.stderr)
    return 0


def _exit(code: int) -> None:
    """Under torchrun, leave without running C++ static destructors: gloo's worker threads
    can still be joinable then, and the process aborts ("terminate called without an active
    exception") after all work — records, checkpoint, run.json — is safely written."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
