"""RunStore: discovery under roots, live growth seen through the watcher, eviction."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor import RunWriter
from monitor.dashboard.store import RunStore

KL = {"kl_mean": 0.02, "kl_max": 0.1, "beta": 0.1, "reward_mean": 0.5}


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("poll", [False, True])
def test_run_appears_and_grows_while_watched(tmp_path: Path, poll: bool) -> None:
    store = RunStore([tmp_path], poll=poll, poll_interval_s=0.2, rescan_interval_s=0.5)
    try:
        assert store.run_ids() == []
        writer = RunWriter(tmp_path / "team" / "exp1", name="exp1")
        writer.log(0, **KL)
        label = tmp_path.name
        assert wait_for(lambda: store.run_ids() == [f"{label}/team/exp1"])
        entry = store.get(f"{label}/team/exp1")
        assert entry is not None and entry.run is not None and entry.run.n_rows == 1
        for step in range(1, 6):
            writer.log(step, **KL)
        assert wait_for(lambda: store.refresh(f"{label}/team/exp1"))
        assert wait_for(lambda: store.get(f"{label}/team/exp1").run.n_rows == 6)  # type: ignore[union-attr]
        summary = store.summary(f"{label}/team/exp1")
        assert summary is not None
        assert summary.status == "running" and summary.last_step == 5 and summary.name == "exp1"
        writer.close()
        store.get(f"{label}/team/exp1")
        assert wait_for(lambda: store.summary(f"{label}/team/exp1").status == "finished")  # type: ignore[union-attr]
    finally:
        store.close()


def test_unknown_ids_are_not_paths(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "root" / "a") as writer:
        writer.log(0, **KL)
    store = RunStore([tmp_path / "root"], watch=False)
    assert store.run_ids() == ["root/a"]
    for evil in ["../root/a", "root/../root/a", str(tmp_path / "root" / "a"), "root/a/..", ""]:
        assert store.get(evil) is None


def test_deleted_run_disappears(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "a") as writer:
        writer.log(0, **KL)
    store = RunStore([tmp_path], watch=False, rescan_interval_s=0)
    rid = f"{tmp_path.name}/a"
    assert store.get(rid) is not None
    (tmp_path / "a" / "metrics.jsonl").unlink()
    store.scan(force=True)
    assert store.get(rid) is None


def test_light_summary_without_loading(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "a", name="alpha") as writer:
        for step in range(3):
            writer.log(step, **KL)
    store = RunStore([tmp_path], watch=False)
    (summary,) = store.summaries()
    assert summary.name == "alpha" and summary.last_step == 2 and summary.status == "finished"
    assert summary.rows is None  # not loaded: the sidebar did not parse the whole file


def test_cold_runs_are_evicted_over_the_row_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in "abc":
        with RunWriter(tmp_path / name) as writer:
            for step in range(100):
                writer.log(step, **KL)
    monkeypatch.setattr("monitor.dashboard.store.KEEP_WARM_S", 0.0)
    store = RunStore([tmp_path], watch=False, max_rows=150)
    label = tmp_path.name
    for name in "abc":
        assert store.get(f"{label}/{name}") is not None
    assert store.rows_held() <= 150
    # the most recent one is kept; evicted ones reload transparently
    assert store.entry(f"{label}/c").run is not None  # type: ignore[union-attr]
    again = store.get(f"{label}/a")
    assert again is not None and again.run is not None and again.run.n_rows == 100


def test_many_viewer_threads_share_one_store_while_a_writer_appends(tmp_path: Path) -> None:
    import threading

    store = RunStore([tmp_path], poll_interval_s=0.01)
    writer = RunWriter(tmp_path / "live")
    writer.log(0, **KL)
    rid = f"{tmp_path.name}/live"
    errors: list[BaseException] = []
    stop = threading.Event()

    def viewer() -> None:
        try:
            while not stop.is_set():
                view = store.view(rid)
                assert view is not None
                steps, kl = view.data.steps, view.data.column("kl_mean")
                assert len(steps) == len(kl)
                assert (steps == range(len(steps))).all()
                assert not steps.flags.writeable and not kl.flags.writeable
                store.summaries()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=viewer) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        for step in range(1, 2000):
            writer.log(step, **KL)
        writer.close()
    finally:
        stop.set()
        for t in threads:
            t.join()
        store.close()
    assert not errors, errors[0]
    assert wait_for(lambda: store.get(rid).run.n_rows == 2000)  # type: ignore[union-attr]


def test_the_stores_own_reads_do_not_mark_runs_dirty(tmp_path: Path) -> None:
    # inotify reports opens and read-only closes too; reacting to them made every read
    # schedule another read (1,000 sidebar runs were re-read on every rerun).
    with RunWriter(tmp_path / "a") as writer:
        writer.log(0, **KL)
    with RunWriter(tmp_path / "b") as writer:
        writer.log(0, **KL)
    with RunWriter(tmp_path / "sentinel") as writer:
        writer.log(0, **KL)
    store = RunStore([tmp_path], poll_interval_s=60)
    try:
        label = tmp_path.name
        loaded = store.get(f"{label}/a")
        assert loaded is not None
        store.summaries()  # reads b's run.json and the tail of its metrics
        unloaded = store.entry(f"{label}/b")
        sentinel = store.entry(f"{label}/sentinel")
        assert unloaded is not None and unloaded.light is not None
        assert sentinel is not None and sentinel.light is not None
        # A witness instead of a sleep: one inotify queue per root delivers events in order,
        # so once this later write is seen, every event our reads caused has been handled.
        with open(tmp_path / "sentinel" / "metrics.jsonl", "a") as f:
            f.write('{"step": 1, "kl_mean": 0.1}\n')
        assert wait_for(lambda: sentinel.light is None, timeout=30)
        assert loaded.dirty is False
        assert unloaded.light is not None
        with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
            f.write('{"step": 1, "kl_mean": 0.1}\n')  # a real write still counts
        assert wait_for(lambda: unloaded.light is None)
    finally:
        store.close()


def test_background_checks_count_alerts_of_runs_nobody_opened(tmp_path: Path) -> None:
    nan = float("nan")
    with RunWriter(tmp_path / "diverged") as writer:
        writer.log(0, **KL)
        writer.log(1, kl_mean=nan, kl_max=nan, beta=0.1, reward_mean=0.5)
    with RunWriter(tmp_path / "fine") as writer:
        writer.log(0, **KL)
    label = tmp_path.name
    store = RunStore([tmp_path], watch=False, background_checks=True)
    try:
        assert wait_for(lambda: store.summary(f"{label}/diverged").alert_count == 1)  # type: ignore[union-attr]
        diverged = store.summary(f"{label}/diverged")
        assert diverged is not None and diverged.worst_severity == "critical"
        assert wait_for(lambda: store.summary(f"{label}/fine").alert_count == 0)  # type: ignore[union-attr]
    finally:
        store.close()


# -- roots and runs that cannot be read (issue 23) ---------------------------------------------


def test_missing_and_unreadable_roots_are_named_and_the_others_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    good, missing, locked = tmp_path / "good", tmp_path / "missing", tmp_path / "locked"
    with RunWriter(good / "a") as writer:
        writer.log(0, **KL)
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)) == locked:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with RunStore([good, missing, locked, fifo], watch=False) as store:
        assert store.run_ids() == ["good/a"]
        assert store.root_problems == (
            f"{missing} does not exist",
            f"{locked} cannot be read (Permission denied)",
            f"{fifo} is neither a directory nor a regular file",
        )
        (summary,) = store.summaries()
        assert summary.run_id == "good/a" and summary.problem is None


def test_a_run_folder_that_becomes_unreadable_is_listed_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its folder can no longer be listed (the walk passes over it) and its files not be
    opened: the run stays in the list, with the OS error, beside the healthy one."""
    import errno
    import os

    from monitor.sources.tail import FileTail

    for name in ("locked", "fine"):
        with RunWriter(tmp_path / name) as writer:
            writer.log(0, **KL)
    store = RunStore([tmp_path], watch=False, rescan_interval_s=0, poll_interval_s=0)
    label = tmp_path.name
    assert store.run_ids() == [f"{label}/fine", f"{label}/locked"]
    assert store.view(f"{label}/locked") is not None
    locked = tmp_path / "locked"
    real_scandir, real_read = os.scandir, FileTail.read

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)) == locked:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    def read(self: FileTail) -> object:
        if self.path.parent == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        return real_read(self)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(FileTail, "read", read)
    with open(locked / "metrics.jsonl", "a") as f:
        f.write('{"step": 1, "kl_mean": 0.1}\n')
    store.scan(force=True)
    assert store.run_ids() == [f"{label}/fine", f"{label}/locked"]  # not dropped
    view = store.view(f"{label}/locked")
    assert view is not None and view.read_error and "Permission denied" in view.read_error
    summaries = {s.run_id: s for s in store.summaries()}
    assert "Permission denied" in (summaries[f"{label}/locked"].problem or "")
    assert summaries[f"{label}/fine"].problem is None
    monkeypatch.undo()
    (locked / "metrics.jsonl").unlink()
    (locked / "run.json").unlink()
    locked.rmdir()
    store.scan(force=True)
    assert store.run_ids() == [f"{label}/fine"]  # gone for real: forgotten
    store.close()


def test_one_run_whose_summary_fails_is_listed_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor.dashboard.store

    for name in ("bad", "good"):
        with RunWriter(tmp_path / name) as writer:
            writer.log(0, **KL)
    real = monitor.dashboard.store._light_summary

    def light(entry: monitor.dashboard.store.RunEntry, now: float | None, stall: object) -> object:
        if entry.path.name == "bad":
            raise ValueError("a hostile file")
        return real(entry, now, stall)  # type: ignore[arg-type]

    monkeypatch.setattr(monitor.dashboard.store, "_light_summary", light)
    with RunStore([tmp_path], watch=False) as store:
        bad, good = store.summaries()
        assert bad.run_id.endswith("/bad") and bad.problem == "ValueError: a hostile file"
        assert good.run_id.endswith("/good") and good.problem is None


def test_summaries_tally_alerts_by_severity_and_count_skipped_lines(tmp_path: Path) -> None:
    from monitor.dashboard.run_view import AlertTally

    nan = float("nan")
    with RunWriter(tmp_path / "diverged") as writer:
        for step in range(50):
            writer.log(step, **KL)
        writer.log(50, kl_mean=nan, kl_max=nan, beta=0.1, reward_mean=0.5)
    with open(tmp_path / "diverged" / "metrics.jsonl", "a") as f:
        f.write("garbage\n")
    label = tmp_path.name
    with RunStore([tmp_path], watch=False) as store:
        (light,) = store.summaries()
        assert light.tally is None and light.skipped is None  # not checked yet
        (checked,) = store.summaries(check_s=5.0)  # the landing page's first look
        assert checked.tally is not None and checked.tally.critical == 1
        assert checked.skipped == 1
        pulse = store.pulse(f"{label}/diverged")
        assert pulse is not None and pulse.tally == checked.tally
        view = store.view(f"{label}/diverged")
        assert view is not None and AlertTally.of(view.alerts) == checked.tally


@pytest.mark.parametrize(("quiet_s", "status"), [(300, "running"), (700, "stalled")])
def test_a_run_logging_every_30_s_has_one_status_in_the_list_and_on_its_page(
    tmp_path: Path, quiet_s: float, status: str
) -> None:
    """Stalled after max(60 s, 20 × its usual 30 s) = 600 s of silence — in the run list
    before the run is opened (its summary peeks at the file's end), on its page, and in
    run_stalled (one definition, monitor.run.stall_threshold)."""
    import json
    import os

    now = time.time()
    last = now - quiet_s
    run = tmp_path / "runs" / "slow"
    run.mkdir(parents=True)
    records = [
        {"step": i, "time": last - 30.0 * (49 - i), "kl_mean": 0.05, "kl_max": 0.2}
        for i in range(50)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "run.json").write_text(json.dumps({"name": "slow", "status": "running"}))
    for name in ("metrics.jsonl", "run.json"):
        os.utime(run / name, (last, last))
    with RunStore([tmp_path / "runs"], watch=False) as store:
        (run_id,) = store.run_ids()
        light = store.summary(run_id, now=now)  # not loaded yet
        assert light is not None and light.rows is None and light.status == status
        view = store.view(run_id)
        assert view is not None
        entry = store.get(run_id)
        assert entry is not None and entry.status(now) == status
        stalled = [a.rule for a in entry.monitored.alerts(now)] if entry.monitored else []
        assert ("run_stalled" in stalled) == (status == "stalled")
