"""sources/ owns the formats: a format registered here, in one table entry, is discovered by
the store, watched (its new rows seen within the live latency) and badged — with nothing
outside this module and `monitor.sources.FORMATS` knowing about it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from monitor import sources
from monitor.dashboard.store import RunStore
from monitor.sources.base import RunLocation, Source, SourceRead
from monitor.sources.parse import ParsedBlock

FORMAT = "toy"
LIVE_LATENCY_S = 5.0  # generous: the page checks twice a second


def locate(directory: Path, entries: list[os.DirEntry[str]]) -> list[RunLocation]:
    """A toy run is a directory holding `run.toy`: one "<step> <kl>" per line."""
    return [RunLocation(FORMAT, directory)] if any(e.name == "run.toy" for e in entries) else []


class ToySource(Source):
    format = FORMAT
    label = "Toy"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self._offset = 0

    def read(self) -> SourceRead:
        with open(self.path / "run.toy", "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        rows = [line.split() for line in complete.decode().splitlines() if line.strip()]
        if not rows:
            return SourceRead()
        steps = np.array([int(r[0]) for r in rows], dtype=np.int64)
        kl = np.array([float(r[1]) for r in rows])
        return SourceRead([ParsedBlock(steps, {"kl_mean": kl}, lines=len(rows))])

    def last_write_time(self) -> float | None:
        return os.stat(self.path / "run.toy").st_mtime


@pytest.fixture
def toy_format(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = sources.Format(__name__, "ToySource", "Toy", "violet", ("*.toy",))
    monkeypatch.setitem(sources.FORMATS, FORMAT, entry)
    monkeypatch.setitem(sources.FORMAT_LABELS, FORMAT, "Toy")


def write(path: Path, steps: range) -> None:
    with open(path, "a") as f:
        f.write("".join(f"{s} {0.01 + s / 1000}\n" for s in steps))


def test_a_format_in_one_table_entry_is_discovered_watched_and_badged(
    tmp_path: Path, toy_format: None
) -> None:
    root = tmp_path / "runs"
    (root / "t1").mkdir(parents=True)
    write(root / "t1" / "run.toy", range(10))
    with RunStore([root]) as store:
        (run_id,) = store.run_ids()
        view = store.view(run_id)
        assert view is not None and view.data.n_rows == 10 and view.format_label == "Toy"
        summary = store.summary(run_id)
        assert summary is not None and (summary.source, summary.badge) == ("Toy", "violet")
        write(root / "t1" / "run.toy", range(10, 25))  # the file grows: watched
        deadline = time.monotonic() + LIVE_LATENCY_S
        while time.monotonic() < deadline:
            view = store.view(run_id)
            if view is not None and view.data.n_rows == 25:
                break
            time.sleep(0.05)
        assert view is not None and view.data.n_rows == 25
        (root / "t2").mkdir()
        write(root / "t2" / "run.toy", range(3))  # a new run file: discovered
        deadline = time.monotonic() + LIVE_LATENCY_S
        while time.monotonic() < deadline and len(store.run_ids()) < 2:
            time.sleep(0.05)
        assert len(store.run_ids()) == 2


def test_file_names_that_mark_a_run_come_from_the_table(toy_format: None) -> None:
    assert sources.is_run_file("x.toy") and sources.is_run_file("metrics.jsonl")
    assert sources.is_run_file("run-abc.wandb") and not sources.is_run_file("model.safetensors")
    nested = Path("/r/mlruns/0/abc/metrics/train/kl")
    assert Path("/r/mlruns/0/abc") in sources.watch_keys(nested)
    assert Path("/r/db.db") in sources.watch_keys(Path("/r/db.db-journal"))
