"""Faults a team dashboard meets: each gives a clear status and breaks nothing else."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from monitor import RunWriter
from monitor.dashboard.store import RunStore
from monitor.sources.tail import FileTail

KL = {"kl_mean": 0.02, "kl_max": 0.1, "beta": 0.1, "reward_mean": 0.5}


def make_run(root: Path, name: str, steps: int = 5, close: bool = True) -> RunWriter:
    writer = RunWriter(root / name, name=name)
    for step in range(steps):
        writer.log(step, **KL)
    if close:
        writer.close()
    return writer


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    make_run(tmp_path, "healthy")
    s = RunStore([tmp_path], watch=False, poll_interval_s=0, rescan_interval_s=0)
    yield s
    s.close()


def healthy_is_fine(store: RunStore, tmp_path: Path) -> None:
    entry = store.get(f"{tmp_path.name}/healthy")
    assert entry is not None and entry.run is not None and entry.run.n_rows == 5
    assert entry.run.read_error is None


def test_run_deleted_while_viewed(store: RunStore, tmp_path: Path) -> None:
    make_run(tmp_path, "doomed")
    rid = f"{tmp_path.name}/doomed"
    entry = store.get(rid)
    assert entry is not None and entry.run is not None
    run = entry.run
    shutil.rmtree(tmp_path / "doomed")
    store._update(entry)  # a viewer still holding the entry refreshes it
    assert run.n_rows == 5  # what was read stays on screen
    assert run.read_error is not None and "metrics.jsonl" in run.read_error
    assert store.get(rid) is None  # and the next scan forgets the run
    healthy_is_fine(store, tmp_path)


def test_metrics_truncated_or_replaced(store: RunStore, tmp_path: Path) -> None:
    make_run(tmp_path, "replaced")
    rid = f"{tmp_path.name}/replaced"
    assert store.get(rid).run.n_rows == 5  # type: ignore[union-attr]
    (tmp_path / "replaced" / "metrics.jsonl").write_text('{"step": 0, "kl_mean": 0.5}\n')
    run = store.get(rid).run  # type: ignore[union-attr]
    assert run is not None and run.n_rows == 1
    assert any("truncated or replaced" in p.reason for p in run.problems)
    healthy_is_fine(store, tmp_path)


def test_permission_denied(
    store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(tmp_path, "locked")
    rid = f"{tmp_path.name}/locked"
    assert store.get(rid).run.n_rows == 5  # type: ignore[union-attr]

    def denied(self: FileTail) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    with open(tmp_path / "locked" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "kl_mean": 0.1}\n')
    monkeypatch.setattr(FileTail, "read", denied)
    run = store.get(rid).run  # type: ignore[union-attr]
    assert run is not None and run.n_rows == 5
    assert run.read_error is not None and "Permission denied" in run.read_error
    summary = store.summary(rid)
    assert summary is not None and summary.problem and "Permission denied" in summary.problem
    monkeypatch.undo()
    healthy_is_fine(store, tmp_path)


def test_writer_crashed_mid_line(store: RunStore, tmp_path: Path) -> None:
    make_run(tmp_path, "crashed", close=False)
    with open(tmp_path / "crashed" / "metrics.jsonl", "ab") as f:
        f.write(b'{"step":5,"kl_me')  # the process died here
    rid = f"{tmp_path.name}/crashed"
    run = store.get(rid).run  # type: ignore[union-attr]
    assert run is not None and run.n_rows == 5 and run.skipped == 0
    summary = store.summary(rid, now=run.last_write_time + 3600)  # type: ignore[operator]
    assert summary is not None and summary.status == "stalled"
    healthy_is_fine(store, tmp_path)


def test_run_json_not_valid_json(store: RunStore, tmp_path: Path) -> None:
    make_run(tmp_path, "badinfo")
    (tmp_path / "badinfo" / "run.json").write_text('{"name": "x", ')
    rid = f"{tmp_path.name}/badinfo"
    run = store.get(rid).run  # type: ignore[union-attr]
    assert run is not None and run.n_rows == 5 and run.info == {}
    summary = store.summary(rid)
    assert summary is not None and summary.name == "badinfo"  # falls back to the dir name
    assert summary.problem is not None and "not valid JSON" in summary.problem
    light = RunStore([tmp_path], watch=False).summary(rid)  # unloaded path says it too
    assert light is not None and light.problem is not None and "not valid JSON" in light.problem
    healthy_is_fine(store, tmp_path)


def test_symlink_escaping_the_root_is_ignored(tmp_path: Path) -> None:
    inside, outside = tmp_path / "root", tmp_path / "secret"
    make_run(inside, "ok")
    make_run(outside, "private")
    (inside / "escape").symlink_to(outside / "private", target_is_directory=True)
    (inside / "sneaky").mkdir()
    (inside / "sneaky" / "metrics.jsonl").symlink_to(outside / "private" / "metrics.jsonl")
    assert RunStore([inside], watch=False).run_ids() == ["root/ok"]
    allowed = RunStore([inside], watch=False, follow_external_symlinks=True)
    assert allowed.run_ids() == ["root/escape", "root/ok", "root/sneaky"]


def test_bad_alert_thresholds_in_run_json_are_reported(store: RunStore, tmp_path: Path) -> None:
    make_run(tmp_path, "badrules")
    info_path = tmp_path / "badrules" / "run.json"
    info = info_path.read_text().replace('"name":', '"alerts": {"kl_spike": {"bogus": 1}}, "name":')
    info_path.write_text(info)
    rid = f"{tmp_path.name}/badrules"
    entry = store.get(rid)
    assert entry is not None and entry.run is not None and entry.run.n_rows == 5
    assert entry.monitored is not None
    (invalid,) = [a for a in entry.monitored.alerts() if a.rule == "alert_config_invalid"]
    assert "bogus" in invalid.message and invalid.active
    healthy_is_fine(store, tmp_path)


def test_a_hung_read_does_not_block_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    make_run(tmp_path, "healthy")
    make_run(tmp_path, "on-nfs")
    release = threading.Event()
    real_read = FileTail.read

    def hung_on_nfs(self: FileTail):  # type: ignore[no-untyped-def]
        if "on-nfs" in str(self.path):
            release.wait(10)  # a network disk that stopped answering
        return real_read(self)

    monkeypatch.setattr(FileTail, "read", hung_on_nfs)
    store = RunStore([tmp_path], watch=False, poll_interval_s=0, read_timeout_s=0.3)
    try:
        started = time.monotonic()
        entry = store.get(f"{tmp_path.name}/on-nfs")
        assert time.monotonic() - started < 2.0  # the page got control back
        assert entry is not None and entry.slow
        healthy_is_fine(store, tmp_path)  # other runs are read as usual meanwhile
        release.set()  # the disk answers again: the next look has the rows
        entry = store.get(f"{tmp_path.name}/on-nfs")
        assert entry is not None and not entry.slow and entry.run is not None
        assert entry.run.n_rows == 5
    finally:
        release.set()
        store.close()
