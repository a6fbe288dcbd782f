"""`KLWatchCallback`: a klwatch run directory from any Hugging Face Trainer, TRL's included.

    from monitor.integrations.hf import KLWatchCallback
    trainer = GRPOTrainer(..., callbacks=[KLWatchCallback("runs/grpo-7b")])

The dashboard then reads `runs/grpo-7b` live, with what the KL means (units, estimator, β)
written beside the numbers. What is written and why: monitor.integrations.trainer_log. Only
this module imports transformers; `import monitor` stays torch-free.

TRL facts this relies on (TRL 1.16): GRPOTrainer and RLOOTrainer log `kl` (per-token mean; k3
in GRPO, k1 in RLOO) only when beta != 0, `reward`, `entropy`, `completions/mean_length`; β is
`args.beta`, assigned once in the trainer's __init__ and never changed. With
`log_completions=True` GRPOTrainer writes `completions/completions_<step>.parquet` after each
log (RLOOTrainer sends its table only to wandb/trackio: no samples for RLOO).
The experimental PPOTrainer logs `objective/kl` (KL summed per sequence, estimator
`args.kl_estimator`) with a constant `args.kl_coef`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from monitor.integrations.trainer_log import DEFAULT_SAMPLES_PER_LOG, TrainerRunLog

__all__ = ["KLWatchCallback"]


class KLWatchCallback(TrainerCallback):
    """Writes one klwatch row per logged training step into `run_dir` (main process only).

    name             run.json name (default: args.run_name, else the directory name)
    preset           force the trainer's names (e.g. "trl_rloo" for an RLOO run under a
                     custom config class); by default from the config class, else detected
                     from the logged names
    samples_per_log  completions copied to samples.jsonl per logged step when TRL writes
                     them (`log_completions=True`); 0 turns samples off
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        name: str | None = None,
        preset: str | None = None,
        samples_per_log: int = DEFAULT_SAMPLES_PER_LOG,
    ) -> None:
        self.run_log = TrainerRunLog(
            run_dir, name=name, preset=preset, samples_per_log=samples_per_log
        )

    @property
    def run_dir(self) -> Path:
        return self.run_log.run_dir

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero:
            self.run_log.begin(args)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if state.is_world_process_zero and logs:
            # Trainer logs, then evaluates this step if control says so: the row waits for
            # the eval metrics (flushed in on_evaluate).
            self.run_log.record(state.global_step, logs, eval_follows=control.should_evaluate)

    # Step boundaries: whatever is pending belongs to a step that is over. PPOTrainer calls
    # on_step_end right after its log and never calls on_step_begin.
    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._step_over(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._step_over(state)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._step_over(state)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._step_over(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero:
            self.run_log.finish()

    def _step_over(self, state: TrainerState) -> None:
        if state.is_world_process_zero:
            self.run_log.flush()
            self.run_log.collect_samples()
