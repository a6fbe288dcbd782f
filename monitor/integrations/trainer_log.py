"""A klwatch run directory fed by a Hugging Face Trainer's log dicts. Needs no torch.

`monitor.integrations.hf.KLWatchCallback` is a thin transformers adapter over `TrainerRunLog`;
every decision about what is written lives here, so it is testable without torch and so the
process-exit hooks that mark a dead run "failed" do not depend on transformers.

What is written (checked against TRL 1.16 / transformers 5.24, see docs in the callback):
  metrics.jsonl  one row per logged training step: TRL's names mapped onto klwatch's series
                 by the trainer's preset (`kl` → kl_mean, `reward` → reward_mean, …), β from
                 the config as `beta`, every other numeric value under its own name. No
                 `kl_max`: TRL logs none, and a NaN one would read as a non-finite KL.
                 Eval metrics (`eval_*`) join the row of the step they were computed at; an
                 eval at a step without a training row goes to run.json `last_eval`, never
                 into a row that would look like a training step with its KL missing.
  run.json       trainer, what its KL means (units, estimator, β, controller "fixed"), the
                 trainer config, the end-of-training summary; status running → finished, or
                 failed when the process exits or gets SIGTERM before training ended.
  samples.jsonl  a few completions per logged step when TRL writes them to disk (GRPO with
                 log_completions=True).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import numbers
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from monitor.presets import KLWATCH_SERIES, PRESETS, detect_preset, resolve_names
from monitor.runlog import RESERVED_KEYS, RunWriter

logger = logging.getLogger(__name__)

# TRL config class → preset. Matched along the MRO so a user's subclass still counts.
TRL_CONFIG_PRESETS = {"GRPOConfig": "trl_grpo", "RLOOConfig": "trl_rloo", "PPOConfig": "trl_ppo"}
# transformers' `_finalize_training` logs these once, at the last step, after the last row.
SUMMARY_MARKER = "total_flos"
EVAL_PREFIX = "eval_"
# A raw name that collides with a klwatch series we fill ourselves is kept under this prefix.
COLLISION_PREFIX = "trainer/"
MAX_CONFIG_STRING = 500  # chat templates and the like are not worth a run.json
MAX_CONFIG_ITEMS = 64
SECRET_WORDS = ("password", "secret", "api_key")  # and any `*_token` (hub_token, …)
DEFAULT_SAMPLES_PER_LOG = 4


@dataclass(frozen=True)
class TrainerFacts:
    """What a trainer's config says about its KL; None where it cannot say."""

    config_class: str  # GRPOConfig, RLOOConfig, PPOConfig, or whatever the args are
    trainer: str  # GRPOTrainer, …
    preset: str | None  # trl_grpo, … (None: decided from the logged names later)
    beta: float | None  # constant β from the config (TRL never logs it)
    kl_units: str | None = None
    kl_estimator: str | None = None
    kl_extra: dict[str, Any] = field(default_factory=dict)  # importance weighting, ref sync


def trainer_facts(args: object, preset: str | None = None) -> TrainerFacts:
    """Facts from a TrainingArguments-like object. `preset` forces the trainer (e.g. an RLOO
    run under a custom config class)."""
    names = [cls.__name__ for cls in type(args).__mro__]
    config_class = next((n for n in names if n in TRL_CONFIG_PRESETS), type(args).__name__)
    known = config_class in TRL_CONFIG_PRESETS
    name = preset or TRL_CONFIG_PRESETS.get(config_class)
    trainer = config_class.removesuffix("Config") + "Trainer" if known else config_class
    if name is None:
        return TrainerFacts(config_class, trainer, None, None)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    p = PRESETS[name]
    # β only from a config we know the meaning of: DPOConfig.beta is not a KL coefficient.
    beta = None
    if known or preset is not None:
        beta = next((_finite(getattr(args, k, None)) for k in p.beta_config_keys), None)
    estimator = p.kl_estimator
    extra: dict[str, Any] = {}
    if name == "trl_ppo":
        # PPO's estimator is a config choice (PPOConfig.kl_estimator, "k1" or "k3").
        estimator = str(getattr(args, "kl_estimator", estimator))
    if name == "trl_grpo" and getattr(args, "use_bias_correction_kl", False):
        # GRPO multiplies its k3 KL by the importance ratio before logging it.
        extra["importance_weighted"] = True
    if getattr(args, "sync_ref_model", False):
        # The reference moves: KL drops back toward 0 at each sync, by design.
        extra["ref_model_sync_steps"] = getattr(args, "ref_model_sync_steps", None)
        extra["ref_model_mixup_alpha"] = getattr(args, "ref_model_mixup_alpha", None)
    return TrainerFacts(config_class, trainer, name, beta, p.kl_units, estimator, extra)


def safe_config(args: object) -> dict[str, Any]:
    """The trainer config as JSON-safe data: secrets dropped, long values trimmed."""
    to_dict = getattr(args, "to_dict", None)
    raw = to_dict() if callable(to_dict) else dict(getattr(args, "__dict__", {}))
    return {str(k): _json_safe(v) for k, v in raw.items() if not _is_secret(str(k))}


def _is_secret(key: str) -> bool:
    key = key.lower()
    return key == "token" or key.endswith("_token") or any(w in key for w in SECRET_WORDS)


def _json_safe(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_CONFIG_STRING else value[:MAX_CONFIG_STRING] + "…"
    if depth < 4 and isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items() if not _is_secret(str(k))]
        return {k: _json_safe(v, depth + 1) for k, v in items[:MAX_CONFIG_ITEMS]}
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v, depth + 1) for v in list(value)[:MAX_CONFIG_ITEMS]]
    return _json_safe(str(value), depth)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _number(value: object) -> float | None:
    """A loggable number (NaN/inf kept), or None for anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def preset_table(preset: str) -> dict[str, Any]:
    """run.json `preset`: the TRL preset (its notes, what β = 0 means) read under klwatch's
    names. A bare "trl_grpo" would make readers look for TRL's raw names (`kl`), which this
    run directory does not hold."""
    return {"base": preset, "series": {s: s for s in KLWATCH_SERIES}}


class TrainerRunLog:
    """One run directory written from a trainer's log dicts (main process only)."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        name: str | None = None,
        preset: str | None = None,
        samples_per_log: int = DEFAULT_SAMPLES_PER_LOG,
    ) -> None:
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        self.run_dir = Path(run_dir)
        self.name = name
        self.forced_preset = preset
        self.samples_per_log = samples_per_log
        self.writer: RunWriter | None = None
        self.facts: TrainerFacts | None = None
        self._preset_decided = False
        self._pending: tuple[int, dict[str, float]] | None = None
        self._session_last_step: int | None = None
        self._completions_dir: Path | None = None
        self._samples_due: int | None = None
        self._reward_weights: list[float] | None = None
        self._warned_steps: set[int] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def begin(self, args: object) -> None:
        """Open the run (status running). A second train() on the same object resumes it."""
        if self.writer is not None:
            return
        facts = trainer_facts(args, self.forced_preset)
        self.facts = facts
        config = safe_config(args)
        if facts.preset is not None:
            # Same keys klwatch's own trainer uses, so RunWriter writes run.json's `kl` block.
            config.update(
                kl_units=facts.kl_units, kl_estimator=facts.kl_estimator, kl_controller="fixed"
            )
        info = {"trainer": facts.trainer, "trainer_config": facts.config_class}
        run_name = self.name or getattr(args, "run_name", None) or None
        self.writer = RunWriter(
            self.run_dir, config=config, name=run_name, extra_info=info, require_kl_keys=False
        )
        self._preset_decided = False
        if facts.preset is not None:
            self._decide_preset(facts.preset, detected=False)
        else:
            # Not known until the names are (RunWriter would default to per_token): say so.
            unknown = {"units": None, "estimator": None, "controller": None, "beta": None}
            self.writer.set_info(kl={**self.writer.info["kl"], **unknown})
        self._session_last_step = None
        self._pending = None
        self._completions_dir = None
        output_dir = getattr(args, "output_dir", None)
        if getattr(args, "log_completions", False) and output_dir:
            # TRL writes <output_dir>/completions/completions_<step>.parquet right after logging.
            self._completions_dir = Path(output_dir) / "completions"
            weights = getattr(args, "reward_weights", None)
            self._reward_weights = [float(w) for w in weights] if weights else None
        _register(self)

    def finish(self) -> None:
        """Training ended normally: write what is pending, status finished."""
        self._close("finished")

    def fail(self, reason: str) -> None:
        """The process is going away before training ended: keep the data, status failed."""
        if self.writer is None:
            return
        with contextlib.suppress(Exception):  # the run must still get its status
            self.writer.set_info(failure=reason)
        self._close("failed")

    def _close(self, status: str) -> None:
        if self.writer is None:
            return
        try:
            self.flush()
            self.collect_samples(final=True)
        finally:
            writer, self.writer = self.writer, None
            _unregister(self)
            writer.close(status)

    # -- records ------------------------------------------------------------------------------

    def record(self, step: int, logs: Mapping[str, Any], eval_follows: bool = False) -> None:
        """One `on_log` call. `eval_follows`: an evaluation of this step comes next, so its
        row waits for the eval metrics (it is written by `flush()` after the evaluation)."""
        writer = self.writer
        if writer is None:
            return
        self.collect_samples(final=True)  # the previous log's completions are on disk now
        if self._pending is not None and self._pending[0] != step:
            self.flush()
        if SUMMARY_MARKER in logs:
            summary = {k: v for k, v in logs.items() if _number(v) is not None}
            writer.set_info(summary=summary)
            return
        # Trainer.log adds `epoch` (and token counts) to eval logs too: a log with any eval_
        # key is an eval log, and only its eval_ values are kept (the training row has epoch).
        is_eval = any(k.startswith(EVAL_PREFIX) for k in logs)
        evals = {k: v for k, v in logs.items() if k.startswith(EVAL_PREFIX)} if is_eval else {}
        train = {} if is_eval else dict(logs)
        if train:
            row = self._row(train)
            if self._pending is not None:
                self._pending[1].update(row)
            elif self._session_last_step is not None and step <= self._session_last_step:
                self._warn_late(step, train)
            else:
                self._pending = (step, row)
            self._samples_due = step
        if evals:
            numbers_only = {k: n for k, v in evals.items() if (n := _number(v)) is not None}
            if self._pending is not None:
                self._pending[1].update(numbers_only)
            else:
                # No training row at this step (eval_steps not a multiple of logging_steps, a
                # manual evaluate()): a row would read as a training step with no KL.
                writer.set_info(last_eval={"step": step, **numbers_only})
        if not eval_follows:
            self.flush()

    def flush(self) -> None:
        """Write the pending row, if any (step boundaries, after an evaluation, on exit)."""
        if self.writer is None or self._pending is None:
            return
        step, row = self._pending
        self._pending = None
        self.writer.log(step, **row)
        self._session_last_step = step

    def _row(self, logs: Mapping[str, Any]) -> dict[str, float]:
        if not self._preset_decided:
            detected = detect_preset(logs.keys())
            # Names not recognised yet (a first log without KL): decide on a later log.
            if detected is not None and detected.name != "klwatch":
                self._decide_preset(detected.name, detected=True)
        mapping = resolve_names(PRESETS[self._preset], logs.keys()) if self._preset else {}
        row: dict[str, float] = {}
        for series, raw in mapping.items():
            value = logs[raw]
            # TRL logs None when every value it averaged was NaN: a NaN KL is news.
            number = math.nan if value is None else _number(value)
            if number is not None:
                row[series] = number
        beta = self.facts.beta if self.facts else None
        if beta is not None:
            row["beta"] = beta
        used = set(mapping.values())
        for key, value in logs.items():
            number = _number(value)
            if key in used or number is None or not key:
                continue
            if key in row or key in RESERVED_KEYS:
                key = COLLISION_PREFIX + key
            row[key] = number
        return row

    @property
    def _preset(self) -> str | None:
        return self.facts.preset if self.facts else None

    def _decide_preset(self, preset: str, *, detected: bool) -> None:
        assert self.writer is not None and self.facts is not None
        self._preset_decided = True
        if detected:
            p = PRESETS[preset]
            self.facts = TrainerFacts(
                self.facts.config_class,
                self.facts.trainer,
                preset,
                None,  # β of an unknown config is not guessed
                p.kl_units,
                p.kl_estimator,
            )
        facts = self.facts
        kl = {
            **self.writer.info.get("kl", {}),
            "units": facts.kl_units,
            "estimator": facts.kl_estimator,
            "controller": "fixed",
            "target": None,
            "beta": facts.beta,
            **facts.kl_extra,
        }
        self.writer.set_info(preset=preset_table(preset), kl=kl, trainer_preset=preset)

    def _warn_late(self, step: int, logs: Mapping[str, Any]) -> None:
        # A second training log at a step already written would start a new segment that
        # supersedes that step's row (the resume rule), so it is dropped, loudly once.
        if step not in self._warned_steps:
            self._warned_steps.add(step)
            logger.warning(
                "klwatch: dropped a log at step %d after that step's row was written: %s",
                step,
                sorted(logs),
            )

    # -- samples ------------------------------------------------------------------------------

    def collect_samples(self, *, final: bool = False) -> None:
        """Copy a few of the completions TRL wrote for the last logged step (its parquet file
        appears only after the trainer's log() returns, so this runs at the next event).
        `final`: no later chance, give up on a file that is not there."""
        step, directory = self._samples_due, self._completions_dir
        if self.writer is None or step is None or directory is None or self.samples_per_log <= 0:
            return
        path = directory / f"completions_{step:05d}.parquet"
        if not path.exists():
            if final:
                self._samples_due = None
            return
        self._samples_due = None
        try:
            import pandas as pd  # only runs that asked TRL for completions pay for this

            frame = pd.read_parquet(path).head(self.samples_per_log)
        except (ImportError, OSError, ValueError) as e:
            logger.warning("klwatch: cannot read TRL completions %s: %s", path, e)
            return
        records = frame.to_dict("records")
        self.writer.log_samples(step, completion_samples(records, self._reward_weights))


def completion_samples(
    rows: list[dict[str, Any]], reward_weights: list[float] | None = None
) -> list[dict[str, Any]]:
    """samples.jsonl records from TRL's completions table (step, prompt, completion, one
    column per reward function, extra columns, advantage)."""
    samples = []
    for row in rows:
        sample: dict[str, Any] = {
            "prompt": _as_text(row.get("prompt")),
            "response": _as_text(row.get("completion"), content_only=True),
        }
        others = {
            k: v for k, v in row.items() if k not in ("step", "prompt", "completion", "advantage")
        }
        numeric = [(k, n) for k, v in others.items() if (n := _number(v)) is not None]
        # "reward" only when it can be told which columns are rewards: one column, or
        # reward_weights naming how many come first. Otherwise per-function values only.
        if len(numeric) == 1:
            sample["reward"] = numeric[0][1]
        elif reward_weights and len(numeric) >= len(reward_weights):
            parts = zip(reward_weights, numeric, strict=False)
            sample["reward"] = math.fsum(w * n for w, (_, n) in parts)
        for key, value in others.items():
            sample[key] = _number(value) if _number(value) is not None else _as_text(value)
        advantage = _number(row.get("advantage"))
        if advantage is not None:
            sample["advantage"] = advantage
        samples.append(sample)
    return samples


def _as_text(value: Any, content_only: bool = False) -> str:
    """A prompt or completion as text: plain strings, or chat messages (lists of dicts with
    role/content, which parquet hands back as numpy arrays)."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, Mapping) for m in value):
        lines = []
        for message in value:
            content = message.get("content")
            text = content if isinstance(content, str) else str(content)
            lines.append(text if content_only else f"{message.get('role', '?')}: {text}")
        return "\n".join(lines)
    return "" if value is None else str(value)


# -- process exit: a run that did not reach on_train_end is "failed" ------------------------------

_open_runs: list[TrainerRunLog] = []
_hooks_lock = threading.RLock()  # re-entered when SIGTERM lands inside _register
_hooks_pid: int | None = None  # the process the hooks belong to (forked workers inherit them)


def _register(run: TrainerRunLog) -> None:
    global _hooks_pid
    with _hooks_lock:
        if run not in _open_runs:
            _open_runs.append(run)
        if _hooks_pid != os.getpid():
            _hooks_pid = os.getpid()
            # atexit covers normal exit, sys.exit and an uncaught exception (Python prints
            # the traceback, then runs atexit). SIGKILL/OOM cannot be caught: the page shows
            # such a run as stalled once it stops growing.
            atexit.register(fail_open_runs, "the process exited before training ended")
        _install_sigterm()


def _unregister(run: TrainerRunLog) -> None:
    with _hooks_lock:
        with contextlib.suppress(ValueError):
            _open_runs.remove(run)
        if not _open_runs:
            _uninstall_sigterm()  # leave the process as we found it


def fail_open_runs(reason: str) -> None:
    """Mark every run still open in this process failed (the atexit / SIGTERM hook)."""
    if _hooks_pid != os.getpid():
        return  # a forked child (DataLoader worker) must not close its parent's run
    for run in list(_open_runs):
        try:
            run.fail(reason)
        except Exception as e:  # one broken run directory must not hide the others
            logger.warning("klwatch: could not mark %s failed: %s", run.run_dir, e)


def _install_sigterm() -> None:
    """SIGTERM (preemption, scancel, a launcher stopping workers) skips atexit. Only when
    nobody else handles it, and only from the main thread (where Python allows handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _uninstall_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    fail_open_runs("the process received SIGTERM before training ended")
    # Then die of SIGTERM as the default handler would (exit status, parent's view).
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
