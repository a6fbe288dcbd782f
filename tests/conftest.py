"""Shared fixtures. Add yours below; do not remove others'."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor import RunWriter


def write_steps(writer: RunWriter, start: int, stop: int, **overrides: float) -> None:
    """Healthy-looking records for steps [start, stop): KL rising and levelling off."""
    for step in range(start, stop):
        kl = 0.05 * (1 - math.exp(-step / 200)) + 0.01
        record = {
            "kl_mean": kl,
            "kl_max": 3 * kl,
            "beta": 0.1,
            "reward_mean": 0.5 + 0.0001 * step,
            "entropy": 2.0 - 0.0005 * step,
        }
        record.update(overrides)
        writer.log(step, **record)


@pytest.fixture
def make_run() -> Iterator[Callable[..., Path]]:
    """make_run(root, name, steps=300, status="finished", **config) -> run dir.

    A run written through the real RunWriter (the only writer of the contract). With
    status=None it stays "running"; its writer is closed when the test ends.
    """
    open_writers: list[RunWriter] = []

    def make(
        root: Path,
        name: str,
        steps: int = 300,
        status: str | None = "finished",
        samples: bool = False,
        **config: Any,
    ) -> Path:
        run_dir = root / name
        writer = RunWriter(run_dir, config={"target_kl": 0.05, **config}, name=name)
        write_steps(writer, 0, steps)
        if samples:
            writer.log_samples(
                steps - 1, [{"prompt": "the cat", "response": "sat **bold**", "reward": 0.7}]
            )
        if status is None:
            open_writers.append(writer)
        else:
            writer.close(status)
        return run_dir

    yield make
    for writer in open_writers:
        writer.close()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For dashboard tests: an empty root the app is pointed at, and only it (given roots
    replace the defaults)."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("KLWATCH_ROOTS", str(root))
    yield root
    # Each test's root gets its own cached RunStore: release it (closes its watcher thread).
    import streamlit as st

    st.cache_resource.clear()
