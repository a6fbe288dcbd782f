"""The training loop: a trainer for the config (the grammar LM's, or a Hugging Face model's)
stepped `cfg.steps` times, each step's record written through `RunWriter`.

It sits above both trainers so that trainer/train.py (the PPO trainer on the shipped LM) and
trainer/hf.py (which subclasses it for Hugging Face models) do not import each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from monitor.runlog import RunWriter
from trainer.config import TrainConfig
from trainer.train import DistInfo, Trainer


def make_trainer(cfg: TrainConfig, dist_info: DistInfo | None = None) -> Trainer:
    """The grammar LM's trainer, or with `cfg.model` the Hugging Face one."""
    if cfg.model:
        from trainer.hf import HFTrainer  # imports transformers: only when asked for

        return HFTrainer(cfg, dist_info)
    return Trainer(cfg, dist_info)


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
    trainer = make_trainer(cfg, dist_info)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    if not dist_info.is_main:
        while trainer.step_index < cfg.steps:
            trainer.step()
        return run_dir

    info = {
        "world_size": dist_info.world_size,
        "device": str(trainer.device),
        **trainer.model_info(),
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
