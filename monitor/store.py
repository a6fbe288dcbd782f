"""The run store: one per server process, shared by every dashboard viewer.

It finds runs under allowed roots (monitor.discover), keeps each run's columns in memory
(monitor.run.Run), re-reads only what changed (watchdog marks runs dirty; a slow poll is the
safety net for filesystems where inotify sees nothing), keeps an alert engine per run, and
evicts the least recently viewed runs when the rows held pass a budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from monitor.alerts import AlertEngine, worst_severity
from monitor.discover import DEFAULT_MAX_DEPTH, find_run_dirs
from monitor.run import STALL_MIN_SECONDS, Run, newest_records
from monitor.runlog import INFO_FILE, METRICS_FILE, SAMPLES_FILE

log = logging.getLogger(__name__)

DEFAULT_RESCAN_S = 10.0  # new run directories appear at least this often without events
DEFAULT_POLL_S = 2.0  # a clean run is re-checked at least this often (missed events)
DEFAULT_READ_TIMEOUT_S = 3.0  # past this a page shows what it has and says the disk is slow
DEFAULT_MAX_ROWS = 20_000_000  # ~1.5 GB of float64 at 8 series: then cold runs are evicted
KEEP_WARM_S = 60.0  # a run viewed this recently is never evicted
BACKGROUND_CHECK_PAUSE_S = 2.0  # between passes over all runs
# inotify also reports opens and read-only closes, including the store's own reads.
READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})


@dataclass
class RunSummary:
    """What the sidebar shows for a run without holding its series."""

    run_id: str
    name: str
    status: str
    last_step: int | None
    last_write: float | None
    rows: int | None
    alert_count: int | None  # None until the run has been checked once
    worst_severity: str | None
    problem: str | None = None


@dataclass
class RunEntry:
    run_id: str
    root: Path
    path: Path
    run: Run | None = None
    engine: AlertEngine | None = None  # created with the first read
    dirty: bool = True
    last_refresh: float = 0.0
    last_access: float = 0.0
    version: tuple[Any, ...] = ()
    alert_count: int | None = None
    worst_severity: str | None = None
    alert_error: str | None = None  # why alerts cannot be computed (bad thresholds)
    light: RunSummary | None = None  # summary of an unloaded run, until it is dirty again
    light_time: float = 0.0
    light_stamp: tuple[Any, ...] = ()
    inflight: Future[bool] | None = None  # the read of this run on a reader thread
    light_inflight: Future[RunSummary] | None = None
    slow: bool = False  # the last read outlasted read_timeout_s (it goes on in background)
    lock: threading.RLock = field(default_factory=threading.RLock)


class _DirtyMarker(FileSystemEventHandler):
    def __init__(self, store: RunStore) -> None:
        self.store = store

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in READ_ONLY_EVENTS:
            return  # our own reads: reacting to them would re-read forever
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(os.fsdecode(raw))
            if path.name in (METRICS_FILE, INFO_FILE, SAMPLES_FILE):
                self.store.mark_dirty(path.parent)
                if event.event_type in ("created", "moved", "deleted"):
                    self.store.request_rescan()
            elif event.is_directory and event.event_type in ("created", "moved", "deleted"):
                self.store.request_rescan()


class RunStore:
    """Thread-safe registry of runs under `roots`. Reads only; never writes a run dir."""

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        *,
        watch: bool = True,
        poll: bool = False,
        poll_interval_s: float = DEFAULT_POLL_S,
        rescan_interval_s: float = DEFAULT_RESCAN_S,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_rows: int = DEFAULT_MAX_ROWS,
        follow_external_symlinks: bool = False,
        alert_config: Any = None,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        background_checks: bool = False,
    ) -> None:
        self.roots = [Path(r) for r in roots]
        self.poll_interval_s = poll_interval_s
        self.rescan_interval_s = rescan_interval_s
        self.max_depth = max_depth
        self.max_rows = max_rows
        self.follow_external_symlinks = follow_external_symlinks
        self.alert_config = alert_config
        self.read_timeout_s = read_timeout_s
        self._closed = False
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="klwatch-read")
        self._entries: dict[str, RunEntry] = {}
        self._by_path: dict[Path, str] = {}
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._rescan_requested = True
        self._last_scan = 0.0
        self._observer: Any = None
        if watch:
            self._start_watching(poll)
        self._checker: threading.Thread | None = None
        if background_checks:
            self._checker = threading.Thread(
                target=self._check_in_background, name="klwatch-checks", daemon=True
            )
            self._checker.start()

    # -- discovery --------------------------------------------------------------------------

    def _start_watching(self, poll: bool) -> None:
        observer = PollingObserver(timeout=self.poll_interval_s) if poll else Observer()
        handler = _DirtyMarker(self)
        for root in self.roots:
            if root.is_dir():
                try:
                    observer.schedule(handler, str(root), recursive=True)
                except OSError as e:  # e.g. inotify watch limit: polling still covers it
                    log.warning("cannot watch %s (%s); falling back to polling", root, e)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _check_in_background(self) -> None:
        """Give every run an alert count for the sidebar, not just the ones someone opened.

        Never-checked runs are read once (oldest viewer-less runs are evicted again by the
        row budget, keeping their last counts); loaded runs are brought up to date, which is
        incremental and cheap.
        """
        while not self._closed:
            try:
                for run_id in self.run_ids():
                    if self._closed:
                        return
                    entry = self.entry(run_id)
                    if entry is not None and (entry.run is not None or entry.alert_count is None):
                        self._update(entry)
                        self._evict_if_needed()
            except Exception:  # a check must never kill the thread that does all the others
                log.exception("background alert check failed")
            time.sleep(BACKGROUND_CHECK_PAUSE_S)

    def close(self) -> None:
        self._closed = True
        self._readers.shutdown(wait=False, cancel_futures=True)
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(timeout=2)
            self._observer = None

    def request_rescan(self) -> None:
        self._rescan_requested = True

    def mark_dirty(self, run_dir: Path) -> None:
        with self._lock:
            run_id = self._by_path.get(run_dir)
            entry = self._entries.get(run_id) if run_id else None
        if entry is not None:
            entry.dirty = True
            entry.light = None

    def _root_labels(self) -> dict[Path, str]:
        """A short, unique label per root: its directory name (suffixed if two collide)."""
        labels: dict[Path, str] = {}
        used: set[str] = set()
        for root in self.roots:
            base = root.resolve().name or "root"
            label, n = base, 2
            while label in used:
                label, n = f"{base}-{n}", n + 1
            used.add(label)
            labels[root] = label
        return labels

    def _scan_due(self) -> bool:
        overdue = time.monotonic() - self._last_scan > self.rescan_interval_s
        return self._rescan_requested or overdue

    def scan(self, force: bool = False) -> None:
        """Find run directories; cheap when nothing asked for it and the interval not passed.

        One scan at a time: a viewer arriving mid-scan waits for it rather than reading a
        registry that is not filled yet.
        """
        if not (force or self._scan_due()):
            return
        with self._scan_lock:
            if not (force or self._scan_due()):
                return  # another thread scanned while we waited
            # Cleared before scanning: an event during the scan asks for another one.
            self._rescan_requested = False
            self._scan_once()
            self._last_scan = time.monotonic()

    def _scan_once(self) -> None:
        found: dict[str, RunEntry] = {}
        labels = self._root_labels()
        for root in self.roots:
            for run_dir in find_run_dirs(
                root,
                max_depth=self.max_depth,
                follow_external_symlinks=self.follow_external_symlinks,
            ):
                rel = run_dir.relative_to(root).as_posix()
                run_id = labels[root] if rel == "." else f"{labels[root]}/{rel}"
                found[run_id] = RunEntry(run_id, root, run_dir)
        with self._lock:
            for run_id, entry in found.items():
                if run_id not in self._entries:
                    self._entries[run_id] = entry
            for run_id in list(self._entries):
                if run_id not in found:  # deleted, moved away, or now unreadable
                    del self._entries[run_id]
            self._by_path = {e.path: run_id for run_id, e in self._entries.items()}

    # -- access -----------------------------------------------------------------------------

    def run_ids(self) -> list[str]:
        self.scan()
        with self._lock:
            return sorted(self._entries)

    def entry(self, run_id: str) -> RunEntry | None:
        """The entry for a discovered run id, or None. Ids are never turned into paths."""
        self.scan()
        with self._lock:
            return self._entries.get(run_id)

    def get(self, run_id: str) -> RunEntry | None:
        """The run, loaded and brought up to date (reads only what was appended)."""
        entry = self.entry(run_id)
        if entry is None:
            return None
        entry.last_access = time.monotonic()
        self._update(entry)
        self._evict_if_needed()
        return entry

    def _update(self, entry: RunEntry) -> bool:
        """Refresh one run if it may have changed; return True if its content changed.

        The read runs on a reader thread and is waited for at most `read_timeout_s`: a file
        on a hung network disk must not block the page. Past the timeout the caller gets the
        rows read so far and `entry.slow` is set; the read finishes in the background.
        """
        if self._closed:
            return self._update_now(entry)  # no reader threads after close(): read inline
        inflight = entry.inflight
        if inflight is None or inflight.done():
            try:
                inflight = entry.inflight = self._readers.submit(self._update_now, entry)
            except RuntimeError:  # close() raced us: read inline
                return self._update_now(entry)
        try:
            changed = inflight.result(timeout=self.read_timeout_s)
        except FutureTimeout:
            entry.slow = True
            return False
        entry.slow = False
        return changed

    def _update_now(self, entry: RunEntry) -> bool:
        with entry.lock:
            now = time.monotonic()
            loaded = entry.run is not None
            if loaded and not entry.dirty and now - entry.last_refresh < self.poll_interval_s:
                return False
            entry.dirty = False
            entry.last_refresh = now
            # A new Run is published only once read and checked: other threads (the sidebar)
            # never see a half-loaded run.
            run = entry.run or Run(entry.path)
            with contextlib.suppress(OSError):  # run.read_error says why; rows read stay
                run.refresh()
            if entry.engine is None:
                # It reads run.info itself when the first rows arrive.
                entry.engine = AlertEngine(self.alert_config)
            try:
                entry.engine.update(run)
                entry.alert_error = None
            except ValueError as e:  # RulesError: a bad `alerts` section in run.json
                entry.alert_error = str(e)
            self._tally_alerts(entry, run)
            entry.run = run
            version = (run.generation, run.n_rows, run.skipped, id(run.info), run.read_error)
            changed = version != entry.version
            entry.version = version
            return changed

    def _tally_alerts(self, entry: RunEntry, run: Run) -> None:
        active = [a for a in entry.engine.alerts_now(run) if a.end_step is None]
        entry.alert_count = len(active)
        entry.worst_severity = worst_severity(active)

    def refresh(self, run_id: str) -> bool:
        """For a live view: True if the run changed since the previous refresh."""
        entry = self.entry(run_id)
        if entry is None:
            return False
        entry.last_access = time.monotonic()
        return self._update(entry)

    # -- memory -----------------------------------------------------------------------------

    def rows_held(self) -> int:
        with self._lock:
            entries = list(self._entries.values())
        return sum(e.run.n_rows for e in entries if e.run is not None)

    def _evict_if_needed(self) -> None:
        if self.rows_held() <= self.max_rows:
            return
        now = time.monotonic()
        with self._lock:
            loaded = sorted(
                (e for e in self._entries.values() if e.run is not None),
                key=lambda e: e.last_access,
            )
        for entry in loaded:
            if self.rows_held() <= self.max_rows:
                break
            if now - entry.last_access < KEEP_WARM_S:
                continue
            with entry.lock:
                entry.run, entry.engine, entry.dirty, entry.version = None, None, True, ()

    # -- summaries --------------------------------------------------------------------------

    def summary(self, run_id: str, now: float | None = None) -> RunSummary | None:
        entry = self.entry(run_id)
        if entry is None:
            return None
        if entry.run is not None and self._checker is None:
            # With background checks, that thread keeps loaded runs current: a sidebar of
            # 1,000 runs must not refresh them all on every rerun.
            self._update(entry)  # cheap unless the watcher marked it dirty or a poll is due
        run = entry.run
        if run is None:
            return self._light(entry, now)
        return RunSummary(
            run_id=run_id,
            name=run.name,
            status=run.status(now),
            last_step=run.last_step,
            last_write=run.last_write_time,
            rows=run.n_rows,
            alert_count=entry.alert_count,
            worst_severity=entry.worst_severity,
            problem=run.read_error
            or (run.problems[0].reason if run.info_problem else None)
            or entry.alert_error,
        )

    def _light(self, entry: RunEntry, now: float | None) -> RunSummary:
        if self._closed:
            return self._light_now(entry, now)
        inflight = entry.light_inflight
        if inflight is None or inflight.done():
            inflight = entry.light_inflight = self._readers.submit(self._light_now, entry, now)
        try:
            return inflight.result(timeout=self.read_timeout_s)
        except FutureTimeout:
            return entry.light or RunSummary(
                entry.run_id,
                entry.path.name,
                "unknown",
                None,
                None,
                None,
                None,
                None,
                problem="reading is slow (network disk?): still trying",
            )

    def _light_now(self, entry: RunEntry, now: float | None) -> RunSummary:
        """An unloaded run's summary, re-read only when its files' stat changed.

        With 1,000 runs in the sidebar, re-reading every run.json and file tail on each
        rerun costs ~0.2 s; two stats per run cost ~10 ms.
        """
        if entry.light is not None and time.monotonic() - entry.light_time < self.poll_interval_s:
            return entry.light
        stamp = _stamp(entry.path)
        if entry.light is None or stamp != entry.light_stamp:
            entry.light, entry.light_stamp = _light_summary(entry, now), stamp
        else:  # unchanged files; only "stalled" can change with the clock
            entry.light = replace(entry.light, status=_light_status(entry.light, now))
        entry.light_time = time.monotonic()
        return entry.light

    def summaries(self, now: float | None = None) -> list[RunSummary]:
        return [s for rid in self.run_ids() if (s := self.summary(rid, now)) is not None]


def _stamp(run_dir: Path) -> tuple[tuple[int, int] | None, ...]:
    stamps: list[tuple[int, int] | None] = []
    for name in (METRICS_FILE, INFO_FILE):
        try:
            st = (run_dir / name).stat()
            stamps.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _light_status(summary: RunSummary, now: float | None) -> str:
    declared = "running" if summary.status == "stalled" else summary.status
    if declared != "running" or summary.last_write is None:
        return declared
    idle = (time.time() if now is None else now) - summary.last_write
    return "stalled" if idle > STALL_MIN_SECONDS else "running"


def _light_summary(entry: RunEntry, now: float | None) -> RunSummary:
    """Status, last step and age from run.json, a stat and the file's last line only."""
    probe = Run(entry.path)
    probe.refresh_info()
    try:
        st = probe.metrics_path.stat()
        last_write: float | None = st.st_mtime
        last_step = next(
            (r["step"] for r in newest_records(probe.metrics_path, 16384) if _is_step(r)), None
        )
        problem = probe.info_problem
    except OSError as e:
        last_write, last_step, problem = None, None, f"{probe.metrics_path}: {e.strerror}"
    probe.last_write_time = last_write
    return RunSummary(
        run_id=entry.run_id,
        name=probe.name,
        status=probe.status(now),
        last_step=last_step,
        last_write=last_write,
        rows=None,
        alert_count=entry.alert_count,
        worst_severity=entry.worst_severity,
        problem=problem,
    )


def _is_step(record: dict[str, Any]) -> bool:
    step = record.get("step")
    return isinstance(step, int) and not isinstance(step, bool)
