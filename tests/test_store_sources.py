"""The store is format-blind: verl, trackio and klwatch runs side by side under one root,
discovered, read live through the watcher, summarized for the sidebar and checked."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from monitor import RunWriter
from monitor.dashboard.store import RunStore
from tests.test_source_trackio import start, trackio  # noqa: F401 (fixture)
from tests.test_source_verl import VerlFileLogger
from tests.test_store import KL, wait_for


def verl_row(step: int) -> dict[str, float]:
    return {
        "actor/reward_kl_penalty": 0.02 + 0.001 * step,
        "actor/reward_kl_penalty_coeff": 0.001,
        "critic/score/mean": 0.5,
        "response_length/mean": 100.0,
    }


@pytest.mark.parametrize("poll", [False, True])
def test_verl_run_is_discovered_and_grows_live(tmp_path: Path, poll: bool) -> None:
    root = tmp_path / "logs"
    logger = VerlFileLogger(root, "gsm8k", "exp1")
    logger.log(verl_row(1), 1)
    with RunWriter(root / "klwatch-run") as writer:
        writer.log(0, **KL)
    store = RunStore([root], poll=poll, poll_interval_s=0.2, rescan_interval_s=0.5)
    try:
        rid = "logs/gsm8k/exp1.jsonl"
        assert wait_for(lambda: rid in store.run_ids())
        assert "logs/klwatch-run" in store.run_ids()
        entry = store.get(rid)
        assert entry is not None and entry.run is not None and entry.run.n_rows == 1
        assert entry.run.meaning.preset == "verl"
        assert entry.run.column("beta").tolist() == [0.001]
        for step in range(2, 6):
            logger.log(verl_row(step), step)
        assert wait_for(lambda: store.get(rid).run.n_rows == 5)  # type: ignore[union-attr]
        summary = store.summary(rid)
        assert summary is not None
        assert (summary.source, summary.status, summary.last_step) == ("verl", "running", 5)
        assert summary.name == "gsm8k/exp1"
    finally:
        logger.finish()
        store.close()


def test_trackio_runs_in_one_database_are_separate_runs(
    tmp_path: Path,
    trackio: ModuleType,  # noqa: F811
) -> None:
    for name, kl in (("calm", 0.03), ("runaway", 2.0)):
        start(trackio, "proj", name, config={"beta": 0.04, "loss_type": "dapo"})
        for step in range(1, 301):
            trackio.log({"train/kl": kl, "train/reward": 0.5, "train/global_step": step * 10})
        trackio.finish()
    store = RunStore([tmp_path], watch=False)
    try:
        label = tmp_path.name
        ids = [rid for rid in store.run_ids() if rid.startswith(f"{label}/proj.db/")]
        assert ids == [f"{label}/proj.db/calm", f"{label}/proj.db/runaway"]
        calm, runaway = (store.get(rid) for rid in ids)
        assert calm is not None and runaway is not None
        assert calm.run is not None and runaway.run is not None
        assert calm.run.steps[:3].tolist() == [10, 20, 30]  # train/global_step, not trackio's
        assert calm.run.meaning.preset == "trl_grpo" and calm.run.meaning.beta == 0.04
        assert np.all(runaway.run.column("kl_mean") == 2.0)
        assert not [a for a in calm.monitored.alerts() if a.severity != "info"]  # type: ignore[union-attr]
        assert "kl_high" in {a.rule for a in runaway.monitored.alerts()}  # type: ignore[union-attr]
        summaries = {s.run_id: s for s in store.summaries()}
        assert summaries[ids[1]].source == "trackio" and summaries[ids[1]].alert_count
    finally:
        store.close()
