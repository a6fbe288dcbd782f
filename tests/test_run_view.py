"""RunStore.view / pulse: what a page reads is frozen, typed and consistent, and stays what
it was while the run grows or is rewritten under it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from monitor import RunWriter
from monitor.dashboard.store import RunStore

KL = {"kl_mean": 0.02, "kl_max": 0.1, "beta": 0.1, "reward_mean": 0.5}


def test_a_view_is_frozen_and_its_arrays_read_only(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run", config={"kl_controller": "fixed"}) as writer:
        for step in range(5):
            writer.log(step, **KL)
    with RunStore([tmp_path], watch=False) as store:
        view = store.view(f"{tmp_path.name}/run")
        assert view is not None
        with pytest.raises(dataclasses.FrozenInstanceError):
            view.status = "running"  # type: ignore[misc]
        with pytest.raises(ValueError, match="read-only"):
            view.data.column("kl_mean")[0] = 1.0
        with pytest.raises(ValueError, match="read-only"):
            view.data.steps[0] = 7
        with pytest.raises(TypeError):
            view.info["name"] = "other"  # type: ignore[index]
        assert view.data.names[:4] == ("kl_mean", "kl_max", "beta", "reward_mean")
        assert np.isnan(view.data.column("never_logged")).all()


def test_a_view_keeps_its_rows_while_the_run_grows_and_resumes(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path / "run")
    for step in range(10):
        writer.log(step, **{**KL, "kl_mean": float(step)})
    rid = f"{tmp_path.name}/run"
    with RunStore([tmp_path], watch=False, poll_interval_s=0.0) as store:
        before = store.view(rid)
        assert before is not None and before.data.n_rows == 10
        for step in range(10, 20):
            writer.log(step, **KL)
        writer.log(5, **{**KL, "kl_mean": -1.0})  # a resume rewrites from step 5
        writer.close()
        after = store.view(rid)
        assert after is not None
        assert after.data.steps.tolist() == [0, 1, 2, 3, 4, 5]
        assert after.data.column("kl_mean")[5] == -1.0
        assert after.pulse.version != before.pulse.version
        # the first view is untouched: same length, same values
        assert before.data.n_rows == 10
        assert before.data.column("kl_mean").tolist() == [float(s) for s in range(10)]


def test_a_view_carries_alerts_thresholds_and_meaning(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run", config={"kl_controller": "fixed"}) as writer:
        for step in range(300):
            writer.log(step, **{**KL, "kl_mean": 0.02 if step < 150 else float("nan")})
    rid = f"{tmp_path.name}/run"
    with RunStore([tmp_path], watch=False) as store:
        assert store.pulse(rid) is None  # not loaded: a pulse reads nothing
        view = store.view(rid)
        assert view is not None
        assert view.meaning.preset == "klwatch" and view.meaning.units == "per_token"
        assert view.thresholds is not None and view.thresholds.high == pytest.approx(0.1)
        nan_alerts = [a for a in view.alerts if a.rule == "kl_nonfinite"]
        assert nan_alerts and nan_alerts[0].step == 150
        pulse = store.pulse(rid)
        assert pulse is not None
        assert dataclasses.replace(pulse, seconds_since_write=None) == dataclasses.replace(
            view.pulse, seconds_since_write=None
        )  # the clock moved between the two
        assert pulse.alert_count == len([a for a in view.alerts if a.active])
        assert view.status == "finished" and not pulse.live


@pytest.mark.parametrize("with_run_json", [True, False])
def test_an_unchanged_run_keeps_its_version(tmp_path: Path, with_run_json: bool) -> None:
    """A viewer redraws when the version changes: re-reading an unchanged run (every poll)
    must not change it — a run without run.json once did, so every viewer of a hand-written
    logger's run redrew its whole page every 2 s."""
    run_dir = tmp_path / "run"
    with RunWriter(run_dir) as writer:
        for step in range(5):
            writer.log(step, **KL)
    if not with_run_json:
        (run_dir / "run.json").unlink()
    rid = f"{tmp_path.name}/run"
    with RunStore([tmp_path], watch=False, poll_interval_s=0.0) as store:
        first = store.view(rid)
        assert first is not None and first.data.n_rows == 5
        for _ in range(3):
            store.mark_dirty(run_dir)
            assert not store.refresh(rid)
            pulse = store.pulse(rid)
            assert pulse is not None and pulse.version == first.pulse.version
        with RunWriter(run_dir) as writer:
            writer.log(5, **KL)
        assert store.refresh(rid)
        pulse = store.pulse(rid)
        assert pulse is not None and pulse.version != first.pulse.version
