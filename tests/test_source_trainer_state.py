"""transformers' trainer_state.json, written by transformers' own `TrainerState.save_to_json`
(the call `Trainer._save_checkpoint` makes at every save)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.sources import find_runs, open_source
from monitor.sources.base import RunLocation
from monitor.sources.parse import ParsedBlock
from monitor.sources.trainer_state import TrainerStateSource, locate

# Importing transformers' TrainerState takes ~5 s (it pulls in torch and the Trainer's
# utilities): these tests run in `make test`, not in the quick `make check` lane.
pytestmark = pytest.mark.slow


def train_log(step: int) -> dict[str, Any]:
    """An on_log entry as TRL's GRPO trainer leaves it in log_history."""
    return {
        "loss": 0.5 - step / 1000,
        "grad_norm": 1.0,
        "learning_rate": 1e-6,
        "kl": 0.001 * step,
        "reward": 0.1 * step,
        "epoch": step / 100,
        "step": step,
    }


def save(directory: Path, history: list[dict[str, Any]], **fields: Any) -> Path:
    from transformers import TrainerState  # lazily: collecting this module stays cheap

    directory.mkdir(parents=True, exist_ok=True)
    steps = [entry["step"] for entry in history if isinstance(entry.get("step"), int)]
    state = TrainerState(
        global_step=max(steps, default=0),
        max_steps=100,
        logging_steps=10,
        log_history=history,
        **fields,
    )
    path = directory / "trainer_state.json"
    state.save_to_json(str(path))
    return path


def entries(directory: Path) -> list[os.DirEntry[str]]:
    return sorted(os.scandir(directory), key=lambda e: e.name)


def joined(blocks: list[ParsedBlock]) -> tuple[list[int], dict[str, np.ndarray]]:
    names = {name: None for block in blocks for name in block.columns}
    steps = [int(s) for block in blocks for s in block.steps]
    columns = {
        name: np.concatenate([b.columns.get(name, np.full(b.n, np.nan)) for b in blocks])
        for name in names
    }
    return steps, columns


def test_reads_log_history(tmp_path: Path) -> None:
    out = tmp_path / "grpo-qwen"
    history = [train_log(10), train_log(20)]
    history[1]["kl"] = math.nan  # json.dumps writes a bare NaN
    history.append({"eval_loss": 0.9, "eval_runtime": 3.0, "epoch": 0.2, "step": 20})
    history.append({"train_runtime": 100.0, "train_loss": 0.45, "total_flos": 0.0, "step": 20})
    save(out, history, trial_params={"beta": 0.04})
    assert locate(out, entries(out)) == [RunLocation("trainer_state", out)]
    source = open_source(RunLocation("trainer_state", out))
    assert source.refresh_info()
    assert source.info["name"] == "grpo-qwen"
    assert source.info["config"]["max_steps"] == 100 and source.info["config"]["beta"] == 0.04
    read = source.read()
    steps, columns = joined(read.blocks)
    assert steps == [10, 20]  # train, eval and summary at step 20 are one row
    assert read.skipped == 0 and not read.problems
    assert columns["kl"][0] == 0.01 and math.isnan(columns["kl"][1])
    assert columns["eval_loss"].tolist()[1] == 0.9 and math.isnan(columns["eval_loss"][0])
    assert columns["train_runtime"][1] == 100.0 and columns["loss"][1] == 0.48
    assert "step" not in columns and "time" not in columns  # no timestamps in this file
    assert source.peek_last_step() == 20
    assert source.read().blocks == []


def test_rewrite_emits_only_new_entries(tmp_path: Path) -> None:
    history = [train_log(10), train_log(20)]
    save(tmp_path, history)
    source = TrainerStateSource(RunLocation("trainer_state", tmp_path))
    assert joined(source.read().blocks)[0] == [10, 20]
    history += [train_log(30), {"eval_loss": 0.8, "step": 30}, train_log(40)]
    save(tmp_path, history)  # the whole file again, as at every checkpoint save
    read = source.read()
    assert not read.reset
    steps, columns = joined(read.blocks)
    assert steps == [30, 40]
    assert columns["eval_loss"][0] == 0.8 and columns["kl"][0] == 0.03


def test_entry_at_the_last_step_extends_that_row(tmp_path: Path) -> None:
    history = [train_log(10), train_log(20)]
    save(tmp_path, history)
    source = TrainerStateSource(RunLocation("trainer_state", tmp_path))
    source.read()
    save(tmp_path, [*history, {"eval_loss": 0.7, "step": 20}])
    steps, columns = joined(source.read().blocks)
    assert steps == [20]  # the table supersedes step 20 with the fuller row
    assert columns["kl"][0] == 0.02 and columns["eval_loss"][0] == 0.7


def test_a_different_history_starts_over(tmp_path: Path) -> None:
    save(tmp_path, [train_log(s) for s in (10, 20, 30, 40)])
    source = TrainerStateSource(RunLocation("trainer_state", tmp_path))
    source.read()
    resumed = [train_log(s) for s in (10, 20)] + [{**train_log(30), "kl": 0.5}]
    save(tmp_path, resumed)  # resumed from checkpoint-20: step 30 logged again, differently
    read = source.read()
    assert read.reset
    steps, columns = joined(read.blocks)
    assert steps == [10, 20, 30] and columns["kl"][2] == 0.5


def test_newest_checkpoint_when_output_dir_has_no_state(tmp_path: Path) -> None:
    out = tmp_path / "out"
    save(out / "checkpoint-10", [train_log(10)])
    save(out / "checkpoint-20", [train_log(10), train_log(20)])
    (out / "checkpoint-30").mkdir()  # being written: no trainer_state.json yet
    assert locate(out, entries(out)) == [RunLocation("trainer_state", out)]
    ckpt = out / "checkpoint-10"
    assert locate(ckpt, entries(ckpt)) == []  # part of the output_dir's run
    assert [loc for loc in find_runs(tmp_path)] == [RunLocation("trainer_state", out)]
    source = TrainerStateSource(RunLocation("trainer_state", out))
    assert joined(source.read().blocks)[0] == [10, 20]
    save(out / "checkpoint-30", [train_log(10), train_log(20), train_log(30)])
    assert joined(source.read().blocks)[0] == [30]
    assert source.peek_last_step() == 30


def test_a_tensorboard_run_is_the_run(tmp_path: Path) -> None:
    out = tmp_path / "trl-out"
    save(out, [train_log(10)])
    save(out / "checkpoint-10", [train_log(10)])
    events = out / "runs" / "Nov25_22-00-00_host"
    events.mkdir(parents=True)
    (events / "events.out.tfevents.1764108000.host.1234.0").write_bytes(b"")
    assert locate(out, entries(out)) == []
    (events / "events.out.tfevents.1764108000.host.1234.0").unlink()
    assert locate(out, entries(out)) == [RunLocation("trainer_state", out)]
    (out / "events.out.tfevents.1764108000.host.1234.0").write_bytes(b"")  # logging_dir=out
    assert locate(out, entries(out)) == []


def test_half_written_file_is_retried_then_reported(tmp_path: Path) -> None:
    path = save(tmp_path, [train_log(10)])
    source = TrainerStateSource(RunLocation("trainer_state", tmp_path))
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])  # save_to_json truncates, then writes
    first = source.read()
    assert first.blocks == [] and first.problems == []  # may be mid-write: try again
    second = source.read()  # unchanged and still broken: now it is a problem
    assert second.blocks == [] and "not valid JSON" in second.problems[0].reason
    assert source.read().problems == []  # said once
    path.write_bytes(text)
    assert joined(source.read().blocks)[0] == [10]


def test_bad_entries_skipped_and_counted(tmp_path: Path) -> None:
    history = [train_log(10), {"loss": 1.0}, {"loss": 1.0, "step": -1}, {"step": "20"}]
    save(tmp_path, [*history, train_log(30)])
    read = TrainerStateSource(RunLocation("trainer_state", tmp_path)).read()
    assert joined(read.blocks)[0] == [10, 30]
    assert read.skipped == 3
    assert [p.reason.split(":")[0] for p in read.problems] == [
        "log_history[1]",
        "log_history[2]",
        "log_history[3]",
    ]
    assert all(p.file == "trainer_state.json" for p in read.problems)


def test_missing_state(tmp_path: Path) -> None:
    assert locate(tmp_path, entries(tmp_path)) == []
    source = TrainerStateSource(RunLocation("trainer_state", tmp_path / "gone"))
    with pytest.raises(FileNotFoundError):
        source.read()
    assert source.peek_last_step() is None and source.last_write_time() is None
    source.refresh_info()  # says why instead of raising
    assert source.info_problem and "gone" in source.info_problem


def test_stamp_changes_with_a_new_checkpoint(tmp_path: Path) -> None:
    save(tmp_path / "checkpoint-10", [train_log(10)])
    source = TrainerStateSource(RunLocation("trainer_state", tmp_path))
    os.utime(tmp_path, ns=(0, 0))  # whatever the clock's granularity, the change shows
    before = source.stamp()
    save(tmp_path / "checkpoint-20", [train_log(10), train_log(20)])
    assert source.stamp() != before
    assert source.last_write_time() is not None
