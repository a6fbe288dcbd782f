"""`python -m trainer`: PPO with a KL penalty on a tiny grammar LM (or your own Hugging Face
model), streaming to a run dir.

Examples:
  python -m trainer --steps 500 --kl-controller adaptive --target-kl 0.05
  python -m trainer --kl-controller none --reward exclaim     # watch it hack the reward
  torchrun --nproc-per-node 2 -m trainer --steps 50           # data-parallel (gloo on CPU)
  python -m trainer --run-dir runs/x --resume --steps 2000    # continue a run
  python -m trainer --model PATH --lora --reward-model RM_PATH --prompts prompts.jsonl

Every TrainConfig field (trainer/config.py) is a flag, generated from the dataclass with its
help, default and choices; a --config file sets any field, and flags win over it.
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
    FIELD_TYPES,
    FIELDS,
    ConfigError,
    TrainConfig,
    build_config,
    load_config_file,
    resolve_pretrained,
)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, generated from the field: `--kl-controller` for
    `kl_controller`, its type from the annotation (a bool is an on-switch), its help and
    choices from the field's metadata (`setting` in trainer/config.py), its default shown in
    the help. A field whose metadata has `no_flag` gets none. The parser's default is
    SUPPRESS, so the namespace holds only the flags given: they alone override a config file
    or a resumed run's config (`config_flags`). Values are checked by TrainConfig.validate."""
    group = parser.add_argument_group(
        "training config (TrainConfig; precedence: defaults < --config FILE < these flags)"
    )
    defaults = TrainConfig()
    for name, f in FIELDS.items():
        if "no_flag" in f.metadata:
            continue
        kind, default = FIELD_TYPES[name], getattr(defaults, name)
        shown = "off" if kind is bool else '""' if default == "" else default
        options: dict[str, Any] = (
            {"action": "store_true"}
            if kind is bool
            else {"type": kind, "choices": f.metadata.get("choices")}
        )
        group.add_argument(
            flag(name),
            dest=name,
            default=argparse.SUPPRESS,
            help=f"{f.metadata['help']} (default: {shown})".replace("%", "%%"),
            **options,
        )


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line, by field name."""
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(parser)
    group = parser.add_argument_group("run control")
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML or JSON file with any TrainConfig field (flags win)",
    )
    group.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def command_line(argv: list[str]) -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc-per-node {world} -m trainer" if world > 1 else "python -m trainer"
    return " ".join([launcher, *map(shlex.quote, argv)]).strip()


def resolve(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[TrainConfig, dict[str, Any] | None]:
    flags = config_flags(args)
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
    from trainer.loop import run
    from trainer.train import init_distributed

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
