"""transformers' trainer_state.json: the fallback for a Trainer/TRL run whose TensorBoard
events are gone.

`TrainerState.save_to_json` (transformers/trainer_callback.py) rewrites the whole file at
every checkpoint save: `json.dumps(asdict(state), indent=2, sort_keys=True)`, so NaN and
±Infinity are bare tokens. It lands in `<output_dir>/checkpoint-<global_step>/` (and in
`<output_dir>/` itself when the script calls `trainer.save_state()`). `log_history` is a
list of dicts with "step" (the global step) and the logged values under the Trainer's own
names ("loss", "learning_rate", TRL's "kl", eval entries' "eval_*"); several entries can
share a step (train, then eval, then the final summary), which are merged into one row.
There are no timestamps, so there is no "time" column.

A Trainer output_dir that also has TensorBoard events (`runs/<date>_<host>/events.out.
tfevents.*`) is one run, the TensorBoard one: this module then finds nothing there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.sources.base import (
    MAX_PROBLEMS_PER_READ,
    RunLocation,
    Source,
    SourceRead,
    is_dir_entry,
    is_file_entry,
)
from monitor.sources.parse import Problem, decode_line
from monitor.sources.rows import RowMerger, as_step, numbers
from monitor.sources.tail import open_regular

FORMAT = "trainer_state"
STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
TB_EVENTS_PREFIX = "events.out.tfevents."
TB_RUNS_DIR = "runs"  # transformers' default logging_dir: <output_dir>/runs/<date>_<host>
# TrainerState fields that describe the run's setup (it has no training arguments).
CONFIG_FIELDS = (
    "max_steps",
    "num_train_epochs",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "train_batch_size",
)
# sort_keys puts the top-level "global_step" (the last step) before "log_history".
_GLOBAL_STEP = re.compile(rb'^  "global_step": (\d+),?\r?$', re.MULTILINE)
_PEEK_BYTES = 4096
_CHECKPOINT_NAME = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)")


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    if directory.name.startswith(CHECKPOINT_PREFIX):
        return []  # part of its output_dir's run
    has_state = any(e.name == STATE_FILE and is_file_entry(e) for e in entries)
    if not has_state and _newest_checkpoint_state(entries) is None:
        return []
    if _has_tensorboard_events(directory, entries):
        return []
    return [RunLocation(FORMAT, directory)]


def _has_tensorboard_events(directory: Path, entries: Sequence[os.DirEntry[str]]) -> bool:
    """Events in the directory itself (logging_dir=output_dir) or in runs/*/."""
    if any(e.name.startswith(TB_EVENTS_PREFIX) for e in entries):
        return True
    try:
        with os.scandir(directory / TB_RUNS_DIR) as runs:
            run_dirs = [Path(e.path) for e in runs if is_dir_entry(e)]
    except OSError:
        return False
    for run_dir in run_dirs:
        try:
            with os.scandir(run_dir) as files:
                if any(f.name.startswith(TB_EVENTS_PREFIX) for f in files):
                    return True
        except OSError:
            continue
    return False


def _newest_checkpoint_state(entries: Sequence[os.DirEntry[str]] | list[Any]) -> Path | None:
    """The trainer_state.json of the highest-numbered checkpoint-<N> that has one."""
    numbered: list[tuple[int, str]] = []
    for e in entries:
        match = _CHECKPOINT_NAME.fullmatch(e.name)
        if match and is_dir_entry(e):
            numbered.append((int(match.group(1)), e.path))
    for _, path in sorted(numbered, reverse=True):
        candidate = Path(path) / STATE_FILE
        if candidate.is_file():
            return candidate
    return None


class TrainerStateSource(Source):
    format = FORMAT
    label = "trainer_state.json"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self._stamp: tuple[Any, ...] | None = None  # of the file last parsed
        self._state: dict[str, Any] | None = None
        self._failed_stamp: tuple[Any, ...] | None = None
        self._emitted: list[str] = []  # canonical text of each log_history entry read
        self._merger = RowMerger()

    def state_file(self) -> Path:
        """The file to read: the output_dir's own trainer_state.json, or its newest
        checkpoint's if that was written later (a run resumed after `save_state()`).

        Raises FileNotFoundError if there is neither.
        """
        own = self.path / STATE_FILE
        with os.scandir(self.path) as it:
            checkpoint = _newest_checkpoint_state(list(it))
        if checkpoint is None:
            return own  # missing: the caller's stat says so, naming the file
        if not own.is_file():
            return checkpoint
        try:
            newer = checkpoint.stat().st_mtime_ns > own.stat().st_mtime_ns
        except OSError:
            newer = False
        return checkpoint if newer else own

    def _load(self, out: SourceRead | None) -> bool:
        """Parse the file if it changed; True if `self._state` is new."""
        path = self.state_file()
        # Only a regular file inside the run directory, opened without blocking: a FIFO
        # or a link out of the directory raises OSError (the run's read error).
        with open_regular(path, within=self.path) as f:
            st = os.fstat(f.fileno())
            stamp = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return False
            data = f.read()
        try:
            state = decode_line(data, check_depth=False)  # NaN tokens accepted
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:  # incl. UnicodeDecodeError
            # save_to_json truncates, then writes: a read can catch it half-written. Only
            # a file still broken, unchanged, on the next read is a problem.
            if stamp == self._failed_stamp and out is not None:
                self._stamp = stamp
                out.problems.append(Problem(_label(path, self.path), None, f"not valid JSON ({e})"))
            self._failed_stamp = stamp
            return False
        self._stamp, self._state, self._failed_stamp = stamp, state, None
        return True

    def read(self) -> SourceRead:
        out = SourceRead()
        self._load(out)
        state, self._state = self._state, None  # each parse is turned into rows once
        if state is None:
            return out
        label = _label(Path(self._stamp[0]), self.path) if self._stamp else STATE_FILE
        history = state.get("log_history")
        if not isinstance(history, list):
            out.problems.append(Problem(label, None, "no 'log_history' list"))
            return out
        canonical = [json.dumps(entry, sort_keys=True) for entry in history]
        start = len(self._emitted)
        if canonical[:start] != self._emitted:
            # Not an extension of what was read: resumed from an earlier checkpoint, or
            # another run saved here. The file is small: read it all again.
            self._merger.reset()
            start = 0
            out.reset = f"{STATE_FILE} now holds a different history: read again"
        for index in range(start, len(history)):
            self._add_entry(index, history[index], label, out)
        self._emitted = canonical
        block = self._merger.take()
        if block is not None:
            out.blocks.append(block)
        return out

    def _add_entry(self, index: int, entry: object, label: str, out: SourceRead) -> None:
        step = as_step(entry.get("step")) if isinstance(entry, dict) else None
        if step is None or not isinstance(entry, dict):
            out.skipped += 1
            if len(out.problems) < MAX_PROBLEMS_PER_READ:
                out.problems.append(
                    Problem(label, None, f"log_history[{index}]: no integer 'step' >= 0")
                )
            return
        values = numbers(entry)
        del values["step"]  # the row's step, not a series
        self._merger.add(step, values)

    def refresh_info(self) -> bool:
        try:
            self._load(None)
            problem = None
        except OSError as e:
            problem = f"{e.filename or self.path}: {e.strerror}"
        changed = problem != self.info_problem
        self.info_problem = problem
        state = self._state
        if state is None and self.info:
            return changed
        config: dict[str, Any] = {}
        if state is not None:
            config = {k: state[k] for k in CONFIG_FIELDS if state.get(k) is not None}
            if isinstance(state.get("trial_params"), dict):
                config.update(state["trial_params"])
        info = {"name": self.path.name, "config": config}
        changed = changed or info != self.info
        self.info = info
        return changed

    def last_write_time(self) -> float | None:
        try:
            return self.state_file().stat().st_mtime
        except OSError:
            return None

    def peek_last_step(self) -> int | None:
        """The top-level "global_step" from the first few KiB: no parse of the history."""
        try:
            with open_regular(self.state_file(), within=self.path) as f:
                head = f.read(_PEEK_BYTES)
        except OSError:
            return None
        match = _GLOBAL_STEP.search(head)
        return int(match.group(1)) if match else None

    def stamp(self) -> tuple[Any, ...]:
        # The directory's mtime changes when a checkpoint-<N> appears.
        return (_stat(self.path / STATE_FILE), _stat(self.path))


def _label(path: Path, run_dir: Path) -> str:
    """The file as people know it: trainer_state.json or checkpoint-N/trainer_state.json."""
    try:
        return str(path.relative_to(run_dir))
    except ValueError:
        return str(path)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
