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
import stat
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from monitor.alerts import worst_severity
from monitor.alerts.config import AlertConfig, StallConfig
from monitor.dashboard.run_view import AlertTally, DataVersion, RunPulse, RunSummary, RunView
from monitor.monitored import MonitoredRun
from monitor.presets import Preset
from monitor.run import Run, run_status, stall_threshold
from monitor.sources import (
    DEFAULT_MAX_DEPTH,
    RunLocation,
    Source,
    badge,
    find_runs,
    is_run_file,
    label,
    open_source,
    watch_keys,
)
from monitor.sources.bucket import BucketMirror, is_url, mirror_for, mirror_of

log = logging.getLogger(__name__)

DEFAULT_RESCAN_S = 10.0  # new run directories appear at least this often without events
DEFAULT_POLL_S = 2.0  # a clean run is re-checked at least this often (missed events)
DEFAULT_READ_TIMEOUT_S = 3.0  # past this a page shows what it has and says the disk is slow
DEFAULT_MAX_ROWS = 20_000_000  # ~1.5 GB of float64 at 8 series: then cold runs are evicted
KEEP_WARM_S = 60.0  # a run viewed this recently is never evicted
BACKGROUND_CHECK_PAUSE_S = 2.0  # between passes over all runs
SUMMARIES_MAX_AGE_S = 0.5  # the sidebar's live check shares one summary pass per this
# inotify also reports opens and read-only closes, including the store's own reads.
READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})


@dataclass
class RunEntry:
    run_id: str
    root: Path
    location: RunLocation
    monitored: MonitoredRun | None = None  # the run and its alert engine, once read
    dirty: bool = True
    last_refresh: float = 0.0
    last_access: float = 0.0
    version: DataVersion | None = None  # None until read
    alert_count: int | None = None
    past_count: int | None = None  # alerts that fired and cleared
    worst_severity: str | None = None
    tally: AlertTally | None = None  # the alerts by their own severity (kept when evicted)
    skipped: int | None = None  # damaged records skipped (kept when evicted)
    light: RunSummary | None = None  # summary of an unloaded run, until it is dirty again
    light_time: float = 0.0
    light_stamp: tuple[Any, ...] = ()
    probe: Source | None = None  # reader for light summaries (no rows kept)
    inflight: Future[bool] | None = None  # the read of this run on a reader thread
    light_inflight: Future[RunSummary] | None = None
    slow: bool = False  # the last read outlasted read_timeout_s (it goes on in background)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def path(self) -> Path:
        return self.location.path

    @property
    def run(self) -> Run | None:
        return self.monitored.run if self.monitored is not None else None

    def status(self, now: float | None = None) -> str | None:
        """The run's status as its alert engine sees it (None until the run is read)."""
        return self.monitored.status(now) if self.monitored is not None else None


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
            if path.name.endswith("-shm"):
                continue  # SQLite readers (us) touch the shared-memory index too
            if not event.is_directory:
                self.store.mark_dirty(*watch_keys(path))
            structural = event.event_type in ("created", "moved", "deleted")
            if structural and (event.is_directory or is_run_file(path.name)):
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
        alert_config: AlertConfig | None = None,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        background_checks: bool = False,
        preset: Preset | None = None,
    ) -> None:
        # A bucket URL root is served from its local mirror (monitor.sources.bucket), which a
        # background thread keeps in sync; everything below sees a directory that grows.
        self._mirrors: dict[Path, BucketMirror] = {}
        self.roots: list[Path] = []
        for r in roots:
            if is_url(r):
                mirror = mirror_for(str(r))
                self._mirrors[mirror.local] = mirror
                self.roots.append(mirror.local)
            else:
                self.roots.append(Path(r))
        self.poll_interval_s = poll_interval_s
        self.rescan_interval_s = rescan_interval_s
        self.max_depth = max_depth
        self.max_rows = max_rows
        self.follow_external_symlinks = follow_external_symlinks
        self.alert_config = alert_config
        # run_stalled's settings: the run list's "stalled" is the alert's (one definition)
        self._stall = (alert_config or AlertConfig()).run_stalled
        self.read_timeout_s = read_timeout_s
        self.preset = preset  # forced on every run (else each run's is detected)
        self._closed = False
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="klwatch-read")
        self._entries: dict[str, RunEntry] = {}
        self._by_path: dict[Path, list[str]] = {}
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._rescan_requested = True
        self._last_scan = 0.0
        self._summaries_lock = threading.Lock()
        self._summaries_cache: tuple[float, list[RunSummary]] | None = None
        self._root_problems: tuple[str, ...] = ()
        self._observer: BaseObserver | None = None
        if watch:
            self._start_watching(poll)
        self._syncer: threading.Thread | None = None
        if self._mirrors:
            self._syncer = threading.Thread(
                target=self._sync_buckets, name="klwatch-buckets", daemon=True
            )
            self._syncer.start()
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

    def _sync_buckets(self) -> None:
        """Bring every bucket root's mirror up to date as often as its poll interval allows
        (a failing bucket backs off alone); new files ask for a rescan."""
        while not self._closed:
            for mirror in list(self._mirrors.values()):
                try:
                    if mirror.sync_if_due():
                        self.request_rescan()
                except Exception:  # a bucket must never kill the thread the others share
                    log.exception("syncing %s failed", mirror.url)
            time.sleep(1.0)

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
                    if entry is None or (entry.run is None and entry.alert_count is not None):
                        continue
                    try:
                        self._update(entry)
                    except Exception:  # one run's failure must not skip the runs after it
                        log.exception("background alert check of %s failed", run_id)
                    self._evict_if_needed()
            except Exception:  # a check must never kill the thread that does all the others
                log.exception("background alert check failed")
            time.sleep(BACKGROUND_CHECK_PAUSE_S)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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

    def mark_dirty(self, *watch_paths: Path) -> None:
        """Mark the runs watched at any of these paths as changed."""
        with self._lock:
            ids = [rid for p in watch_paths for rid in self._by_path.get(p, ())]
            entries = [self._entries[rid] for rid in ids if rid in self._entries]
        for entry in entries:
            entry.dirty = True
            entry.light = None

    def _root_labels(self) -> dict[Path, str]:
        """A short, unique label per root: its directory name (suffixed if two collide)."""
        labels: dict[Path, str] = {}
        used: set[str] = set()
        for root in self.roots:
            mirror = self._mirrors.get(root)
            base = (mirror.url.rsplit("/", 1)[-1] if mirror else root.resolve().name) or "root"
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

    @property
    def root_problems(self) -> tuple[str, ...]:
        """One sentence per root that does not exist or cannot be read, as of the last scan
        (the page names each; the other roots keep serving)."""
        self.scan()
        return self._root_problems

    def _scan_once(self) -> None:
        found: dict[str, tuple[Path, RunLocation]] = {}
        labels = self._root_labels()
        self._root_problems = tuple(
            p
            for root in self.roots
            if (p := self._mirrors[root].problem if root in self._mirrors else root_problem(root))
        )
        for root in self.roots:
            for location in find_runs(
                root,
                max_depth=self.max_depth,
                follow_external_symlinks=self.follow_external_symlinks,
            ):
                found[_run_id(labels[root], root, location)] = (root, location)
        with self._lock:
            for run_id, (root, location) in found.items():
                known = self._entries.get(run_id)
                if known is None or known.location != location:
                    self._entries[run_id] = RunEntry(run_id, root, location)
            for run_id, entry in list(self._entries.items()):
                # Deleted or moved away: forgotten. Now unreadable (its folder cannot be
                # listed, so the walk passed over it): kept, its next read says why.
                if run_id not in found and not _unlistable(entry.location.path, entry.root):
                    del self._entries[run_id]
            by_path: dict[Path, list[str]] = {}
            for run_id, entry in self._entries.items():
                by_path.setdefault(entry.location.watch_path, []).append(run_id)
            self._by_path = by_path

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

    def view(self, run_id: str) -> RunView | None:
        """A frozen view of the run for a page, loaded and brought up to date first; None
        when the run is not discovered (or was evicted under the caller)."""
        entry = self.get(run_id)
        monitored = entry.monitored if entry is not None else None
        if entry is None or monitored is None:
            return None
        run = monitored.run
        alerts = monitored.alerts()
        return RunView(
            pulse=self._pulse(entry, monitored),
            name=run.name,
            path=run.path,
            format=run.format,
            format_label=run.format_label,
            live_note=run.live_note,
            meaning=run.meaning,
            data=run.series_data(),
            alerts=tuple(alerts),
            thresholds=monitored.thresholds,
            info=MappingProxyType(run.info),
            problems=tuple(run.problems),
            skipped=run.skipped,
            read_error=run.read_error,
            slow=entry.slow,
            samples_file=run.samples_file,
        )

    def pulse(self, run_id: str) -> RunPulse | None:
        """What a live check compares: the run's version, status and alert tallies. Reads
        nothing; None while the run is not loaded."""
        entry = self.entry(run_id)
        monitored = entry.monitored if entry is not None else None
        if entry is None or monitored is None:
            return None
        return self._pulse(entry, monitored)

    @staticmethod
    def _pulse(entry: RunEntry, monitored: MonitoredRun) -> RunPulse:
        return RunPulse(
            run_id=entry.run_id,
            version=entry.version or (0, 0, 0, 0, None),
            status=monitored.status(),
            alert_count=entry.alert_count or 0,
            past_count=entry.past_count or 0,
            worst_severity=entry.worst_severity,
            seconds_since_write=monitored.run.seconds_since_write(),
            tally=entry.tally or AlertTally(),
        )

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
            # A new run is published only once read and checked: other threads (the sidebar)
            # never see a half-loaded run.
            monitored = entry.monitored or MonitoredRun.open(
                entry.location, self.alert_config, self.preset
            )
            run = monitored.run
            with contextlib.suppress(OSError):  # run.read_error says why; rows read stay
                run.refresh()
            monitored.update()
            self._tally_alerts(entry, monitored)
            entry.monitored = monitored
            version = (run.generation, run.n_rows, run.skipped, run.info_generation, run.read_error)
            changed = version != entry.version
            entry.version = version
            return changed

    def _tally_alerts(self, entry: RunEntry, monitored: MonitoredRun) -> None:
        alerts = monitored.alerts()
        active = [a for a in alerts if a.end_step is None]
        entry.alert_count = len(active)
        entry.past_count = len(alerts) - len(active)
        entry.worst_severity = worst_severity(active)
        entry.tally = AlertTally.of(alerts)
        entry.skipped = monitored.run.skipped

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
                entry.monitored, entry.dirty, entry.version = None, True, None

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
            status=entry.status(now) or "unknown",
            last_step=run.last_step,
            last_write=run.last_write_time,
            rows=run.n_rows,
            alert_count=entry.alert_count,
            worst_severity=entry.worst_severity,
            problem=run.read_error
            or (run.problems[0].reason if run.problems and run.info_problem else None),
            source=source_label(entry.location),
            badge=badge(entry.location.format),
            past_count=entry.past_count,
            tally=entry.tally,
            skipped=run.skipped,
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
        stamp = _probe(entry).stamp()
        if entry.light is None or stamp != entry.light_stamp:
            entry.light, entry.light_stamp = _light_summary(entry, now, self._stall), stamp
        else:  # unchanged files; "stalled" changes with the clock, the tallies with checks
            entry.light = replace(
                entry.light,
                status=_light_status(entry.light, now, self._stall),
                alert_count=entry.alert_count,
                worst_severity=entry.worst_severity,
                past_count=entry.past_count,
                tally=entry.tally,
                skipped=entry.skipped,
            )
        entry.light_time = time.monotonic()
        return entry.light

    def summaries(self, now: float | None = None, check_s: float = 0.0) -> list[RunSummary]:
        """Every run's summary. With `check_s`, runs never checked yet are read first (for
        at most about that many seconds) so their alert tallies are known: the landing page
        opens the run that most needs attention, not merely the first one read. A run whose
        summary cannot be made is listed with the error, never dropped."""
        run_ids = self.run_ids()
        if check_s > 0:
            self._check_unchecked(run_ids, time.monotonic() + check_s)
        out = []
        for rid in run_ids:
            try:
                summary = self.summary(rid, now)
            except Exception as e:  # one bad run must not hide the others
                log.exception("summary of %s failed", rid)
                summary = RunSummary(
                    rid, rid.rsplit("/", 1)[-1], "unknown", None, None, None, None, None,
                    problem=f"{type(e).__name__}: {e}",
                )  # fmt: skip
            if summary is not None:
                out.append(summary)
        return out

    def _check_unchecked(self, run_ids: Iterable[str], deadline: float) -> None:
        for rid in run_ids:
            entry = self.entry(rid)
            if entry is None or entry.alert_count is not None:
                continue
            if time.monotonic() > deadline:
                return
            try:
                self._update(entry)
            except Exception:  # listed with its error by summary(); never fatal here
                log.exception("checking %s failed", rid)
        self._evict_if_needed()

    def summaries_cached(self, max_age_s: float = SUMMARIES_MAX_AGE_S) -> list[RunSummary]:
        """`summaries()`, computed at most once per `max_age_s` for all callers: every
        viewer's live check asks whether any run in its sidebar changed, and with many
        viewers and many runs that question must cost one answer, not one each."""
        with self._summaries_lock:
            cached = self._summaries_cache
            if cached is not None and time.monotonic() - cached[0] < max_age_s:
                return cached[1]
            fresh = self.summaries()
            self._summaries_cache = (time.monotonic(), fresh)
            return fresh


def _run_id(label: str, root: Path, location: RunLocation) -> str:
    """A stable id from the root's label and the path below it (plus the run's key inside a
    file holding several). Ids are looked up, never turned back into paths."""
    # find_runs builds every location's path from the root it walks, so it is below it.
    rel = location.path.relative_to(root).as_posix()
    run_id = label if rel == "." else f"{label}/{rel}"
    return f"{run_id}/{location.key}" if location.key else run_id


def source_label(location: RunLocation) -> str:
    """The run list's source badge: the format, and the bucket's scheme for a mirrored run
    ("TensorBoard · s3")."""
    text = label(location.format)
    mirror = mirror_of(location.path)
    return f"{text} · {mirror.url.split('://', 1)[0]}" if mirror is not None else text


def root_problem(root: Path) -> str | None:
    """Why a root serves no runs, when it is missing or unreadable; None when it can be read
    (a directory, or a file that may hold runs: a verl JSONL, a trackio database)."""
    try:
        info = os.stat(root)
    except FileNotFoundError:
        return f"{root} does not exist"
    except OSError as e:
        return f"{root} cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(info.st_mode):
        try:
            with os.scandir(root):
                pass
        except OSError as e:
            return f"{root} cannot be read ({e.strerror or e})"
    elif not stat.S_ISREG(info.st_mode):
        return f"{root} is neither a directory nor a regular file"
    return None


def _unlistable(path: Path, root: Path | None = None) -> bool:
    """True if the run at `path` still exists but the walk cannot reach it: its folder, or a
    folder above it (up to `root`), cannot be listed. False once it is gone."""
    folder = path
    while True:
        try:
            with os.scandir(folder):
                pass
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            pass  # a run held in a file (verl JSONL, trackio DB): its folder is next
        except OSError:
            return True
        if folder == root or folder.parent == folder:
            return False
        folder = folder.parent


def _probe(entry: RunEntry) -> Source:
    """A reader kept per entry for the light summary (metadata and a stat, no rows)."""
    if entry.probe is None:
        entry.probe = open_source(entry.location)
    return entry.probe


def _light_status(summary: RunSummary, now: float | None, stall: StallConfig) -> str:
    """An unloaded run's status: `run_status` with the stall threshold a loaded run uses
    (the same usual step interval, peeked from the file's end, and run_stalled's settings)."""
    declared = summary.declared_status
    idle = (
        None
        if summary.last_write is None
        else (time.time() if now is None else now) - summary.last_write
    )
    threshold = stall_threshold(summary.step_interval, stall.factor, stall.min_seconds)
    return run_status(declared, idle, threshold)


def _light_summary(entry: RunEntry, now: float | None, stall: StallConfig) -> RunSummary:
    """Status, last step and age from the run's metadata, a stat and a peek at its end."""
    source = _probe(entry)
    source.refresh_info()
    try:
        last_write = source.last_write_time()
        last_step = source.peek_last_step()
        interval = source.peek_step_interval()
        problem = source.info_problem if source.info_file else None
    except OSError as e:
        last_write, last_step, interval = None, None, None
        problem = f"{e.filename or entry.path}: {e.strerror}"
    name = source.info.get("name")
    summary = RunSummary(
        run_id=entry.run_id,
        name=name if isinstance(name, str) and name else source.default_name,
        status="unknown",
        last_step=last_step,
        last_write=last_write,
        rows=None,
        alert_count=entry.alert_count,
        worst_severity=entry.worst_severity,
        problem=problem,
        source=source_label(entry.location),
        badge=badge(entry.location.format),
        past_count=entry.past_count,
        declared_status=source.info.get("status"),
        tally=entry.tally,
        skipped=entry.skipped,
        step_interval=interval,
    )
    return replace(summary, status=_light_status(summary, now, stall))
