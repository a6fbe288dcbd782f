"""Notifications for `python -m monitor watch`: each new alert, and once its clearing, sent to
Slack, Discord, Teams, e-mail, ntfy or any JSON webhook through Apprise (its URL syntax:
slack://…, discord://…, json://host:port/path, mailto://…: github.com/caronc/apprise/wiki).

How it behaves (docs/deploy.md says it for operators):

- Once per alert, across restarts: what each URL has received is kept in a small JSON state
  file under the user's state directory ($XDG_STATE_HOME or ~/.local/state, klwatch/), never
  in a run directory. An alert is keyed by (run, rule, first step); it counts as sent only
  when the receiver accepted it, so a restart re-sends what never arrived (at least once).
- First start (no state file yet): the history of the runs is not replayed. Alerts active
  now in live runs (status running or stalled) go out as one digest; everything else is
  recorded as already known.
- Never in the way of watching: each URL has its own sender thread. A receiver that is down
  or slow is retried with exponential backoff (capped, forever while the watcher runs) and
  logged; what piles up meanwhile is sent as one digest when it answers again.
- Bursts: at most `digest_after` messages per URL in any `digest_window_s`; whatever is due
  beyond that goes out as one digest listing the alerts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from monitor.alerts import SEVERITY_RANK, Alert
from monitor.alerts.config import RulesError, _merge, read_rules_document
from monitor.dashboard.store import _run_id
from monitor.monitored import MonitoredRun
from monitor.sources import RunLocation
from monitor.text import printable

log = logging.getLogger("klwatch.notify")

STATE_VERSION = 1
LIVE_STATUSES = ("running", "stalled")  # run.status() values whose alerts are "now"
DIGEST_MAX_LINES = 30  # a digest lists this many alerts, then says how many more
RAISED, CLEARED = "raised", "cleared"


class NotifyError(ValueError):
    """Notification settings that cannot be used (bad URL, unwritable state file): exit 2."""


@dataclass(frozen=True)
class NotifySettings:
    """Every notification setting: the `[notify]` table of a rules file, overridden by the
    watch flags (--notify, --dashboard-url, --state)."""

    urls: tuple[str, ...] = ()  # Apprise URLs; none: notifications are off
    dashboard_url: str = ""  # messages link to <dashboard_url>?run=<run id>
    state: str = ""  # state file; default: <user state dir>/klwatch/notify-<hash>.json
    min_severity: str = "info"  # alerts below this severity are not sent
    clearing: bool = True  # also say (once) when an alert clears
    digest_after: int = 5  # more messages than this per URL within…
    digest_window_s: float = 10.0  # …this many seconds are sent as one digest
    retry_initial_s: float = 1.0  # first wait after a failed delivery; doubles each failure…
    retry_max_s: float = 300.0  # …up to this; retries go on while the watcher runs
    # One delivery attempt as a whole; a URL's own ?cto=&rto= set its socket connect and
    # read timeouts (Apprise's default: 4 s each).
    send_timeout_s: float = 30.0
    max_pending: int = 1000  # undelivered messages kept per URL (oldest dropped beyond)


# -- settings ---------------------------------------------------------------------------------


def load_notify_table(path: str | Path, base: NotifySettings | None = None) -> NotifySettings:
    """The `[notify]` table of a TOML rules file over `base`; RulesError names a bad key and
    the file, as the rest of the rules file does (monitor.alerts.config hands this table over)."""
    table = read_rules_document(path).get("notify", {})
    if not isinstance(table, dict):
        raise RulesError(f"{path}: 'notify' must be a table of settings")
    settings = _merge(base or NotifySettings(), table, str(path), "notify.")
    _check_ranges(settings, str(path))
    return settings


def _check_ranges(settings: NotifySettings, source: str) -> None:
    for name in ("digest_window_s", "retry_initial_s", "retry_max_s", "send_timeout_s"):
        if getattr(settings, name) <= 0:
            raise RulesError(f"{source}: 'notify.{name}' must be a number > 0")
    for name in ("digest_after", "max_pending"):
        if getattr(settings, name) < 1:
            raise RulesError(f"{source}: 'notify.{name}' must be a whole number >= 1")


def settings_for_watch(
    rules_file: str | None,
    urls: Sequence[str] | None = None,
    dashboard_url: str | None = None,
    state: str | None = None,
) -> NotifySettings:
    """The rules file's [notify] table (if any) with the flags given on the command line on
    top (--notify replaces the file's urls)."""
    settings = load_notify_table(rules_file) if rules_file else NotifySettings()
    changes: dict[str, Any] = {}
    if urls:
        changes["urls"] = tuple(urls)
    if dashboard_url is not None:
        changes["dashboard_url"] = dashboard_url
    if state is not None:
        changes["state"] = state
    return replace(settings, **changes)


def user_state_dir() -> Path:
    """$XDG_STATE_HOME/klwatch, else ~/.local/state/klwatch (XDG base directories)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "klwatch"


def default_state_path(paths: Sequence[str], urls: Sequence[str]) -> Path:
    """One state file per (watched paths, URLs): two watchers with different settings never
    share one, and the same service finds its own again after a restart."""
    key = json.dumps([sorted(str(Path(p).resolve()) for p in paths), sorted(urls)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return user_state_dir() / f"notify-{digest}.json"


def check_urls(urls: Sequence[str]) -> list[Any]:
    """One Apprise service per URL; NotifyError naming the first URL Apprise cannot use."""
    import apprise  # only watch --notify needs it

    services = []
    for url in urls:
        service = apprise.Apprise.instantiate(url) if url.strip() else None
        if service is None:
            scheme = url.split("://", 1)[0].lower() if "://" in url else ""
            why = (
                f"a {scheme}:// URL, but a required part is missing or malformed"
                if scheme and scheme in _known_schemes()
                else "unknown scheme; e.g. slack://, discord://, workflows:// (Teams), "
                "mailto://, ntfy://, json://host:port/path"
            )
            raise NotifyError(f"notification URL {url!r} is not a usable Apprise URL ({why})")
        services.append(service)
    return services


def _known_schemes() -> set[str]:
    import apprise

    schemes: set[str] = set()
    for plugin in apprise.Apprise().details()["schemas"]:
        for key in ("protocols", "secure_protocols"):
            schemes.update(p.lower() for p in plugin.get(key) or ())
    return schemes


def check_dashboard_url(url: str) -> None:
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise NotifyError(f"dashboard URL {url!r} must start with http:// or https://")


# -- what a message says ----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One thing to tell: an alert raised (possibly already cleared) or its clearing."""

    key: str  # the alert's identity in the state file
    kind: str  # RAISED | CLEARED
    alert: Alert
    run_name: str
    run_id: str  # the dashboard's id of the run
    path: str  # where the run lives on disk
    link: str  # the run on the dashboard, or ""
    startup: bool = False  # active when the watcher first started

    @property
    def marks(self) -> tuple[str, ...]:
        """What delivering this item settles in the state file."""
        if self.kind == RAISED and self.alert.end_step is not None:
            return (RAISED, CLEARED)  # raised and cleared before we could say so
        return (self.kind,)


def dashboard_link(base: str, run_id: str) -> str:
    """`base` with ?run=<run_id> added (URL-encoded), keeping any query it already has."""
    if not base:
        return ""
    parts = urlsplit(base)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("run", run_id)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _value(alert: Alert) -> str:
    return f"{alert.metric} = {alert.value:.4g}"


def _where(item: Item) -> list[str]:
    run = item.run_name if item.run_name == item.run_id else f"{item.run_name} ({item.run_id})"
    lines = [f"Run: {run}", f"Path: {item.path}"]
    if item.link:
        lines.append(f"Dashboard: {item.link}")
    return lines


def format_message(item: Item) -> tuple[str, str, str]:
    """(title, body, severity) of one item; severity picks the message type."""
    a = item.alert
    if item.kind == CLEARED:
        title = f"Cleared: {a.rule} in {item.run_name} (step {a.end_step})"
        body = [
            f"The {a.severity} alert {a.rule} raised at step {a.step} cleared at step "
            f"{a.end_step}.",
            *_where(item),
        ]
        return title, "\n".join(body), "cleared"
    title = f"{a.severity.upper()}: {a.rule} in {item.run_name} at step {a.step}"
    body = [a.message]
    if a.end_step is not None:
        title += f" (cleared at step {a.end_step})"
        body.append(f"It has cleared since, at step {a.end_step}.")
    body += [
        f"Rule: {a.rule} · severity: {a.severity} · step: {a.step} · {_value(a)}",
        *_where(item),
    ]
    return title, "\n".join(body), a.severity


def format_digest(items: Sequence[Item]) -> tuple[str, str, str]:
    """One message for several items (a burst, a backlog, or what is active at startup)."""
    raised = [i for i in items if i.kind == RAISED]
    runs = len({i.run_id for i in items})
    worst = max((i.alert.severity for i in raised), key=SEVERITY_RANK.__getitem__, default="")
    if items and all(i.startup for i in items):
        title = f"klwatch started: {len(items)} alert(s) active now in {runs} run(s)"
    else:
        cleared = len(items) - len(raised)
        told = [f"{len(raised)} new alert(s)"] if raised else []
        told += [f"{cleared} cleared"] if cleared else []
        title = f"klwatch: {' and '.join(told)} in {runs} run(s)"
    lines = []
    ordered = sorted(items, key=lambda i: (i.kind == CLEARED, -SEVERITY_RANK[i.alert.severity]))
    for item in ordered[:DIGEST_MAX_LINES]:
        a = item.alert
        if item.kind == CLEARED:
            head = f"- cleared: {a.rule} in {item.run_name} (step {a.step} → {a.end_step})"
            lines.append(head + (f" {item.link}" if item.link else ""))
            continue
        done = f" (cleared at step {a.end_step})" if a.end_step is not None else ""
        lines.append(
            f"- {a.severity.upper()} {a.rule} in {item.run_id} at step {a.step}{done}: "
            f"{a.message}" + (f" {item.link}" if item.link else f" [{item.path}]")
        )
    if len(items) > DIGEST_MAX_LINES:
        lines.append(f"… and {len(items) - DIGEST_MAX_LINES} more.")
    return title, "\n".join(lines), worst or "cleared"


# -- the state file ---------------------------------------------------------------------------


class DeliveryState:
    """What each URL has been told, on disk (JSON, replaced atomically on every change):
    {"version": 1, "primed": bool, "alerts": {key: {"raised": [url ids], "cleared": [...]}}}.

    `primed` is set once the first poll's history has been recorded: a state file that is
    missing, unreadable or not primed means "first start"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._alerts: dict[str, dict[str, list[str]]] = {}
        self.primed = False
        try:
            document = json.loads(path.read_text())
            self._alerts = {
                str(k): {kind: list(v.get(kind, [])) for kind in (RAISED, CLEARED)}
                for k, v in document["alerts"].items()
            }
            self.primed = bool(document.get("primed"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("state file %s is unreadable (%s): starting afresh", path, e)
        self.first_start = not self.primed

    def told(self, key: str, kind: str, channel: str) -> bool:
        with self._lock:
            return channel in self._alerts.get(key, {}).get(kind, ())

    def mark(self, entries: Iterable[tuple[str, str]], channels: Sequence[str]) -> None:
        """Record (key, kind) as told to each channel (in memory: `save` writes)."""
        with self._lock:
            for key, kind in entries:
                told = self._alerts.setdefault(key, {RAISED: [], CLEARED: []})[kind]
                told.extend(c for c in channels if c not in told)

    def save(self, primed: bool | None = None) -> None:
        """Write the file atomically (temp file + rename). OSError when that is impossible."""
        with self._lock:
            if primed is not None:
                self.primed = primed
            text = json.dumps(
                {"version": STATE_VERSION, "primed": self.primed, "alerts": self._alerts}
            )
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def try_save(self, primed: bool | None = None) -> None:
        try:
            self.save(primed)
        except OSError as e:
            log.error("cannot write state file %s: %s", self.path, e.strerror or e)


# -- one receiver -----------------------------------------------------------------------------


def _notify_type(severity: str) -> Any:
    from apprise import NotifyType

    return {
        "critical": NotifyType.FAILURE,
        "warning": NotifyType.WARNING,
        "cleared": NotifyType.SUCCESS,
    }.get(severity, NotifyType.INFO)


class Channel:
    """One URL: its Apprise service, the messages not yet delivered, its backoff and its rate
    window, and the thread that sends (so a slow receiver only ever blocks itself)."""

    def __init__(
        self,
        url: str,
        service: Any,
        settings: NotifySettings,
        on_delivered: Callable[[Channel, Sequence[Item]], None],
    ) -> None:
        import apprise

        self.id = hashlib.sha256(url.encode()).hexdigest()[:12]  # no secrets in the state file
        self.label = service.url(privacy=True).split("?")[0]  # for logs: tokens masked
        self.settings = settings
        self._apprise = apprise.Apprise()
        self._apprise.add(service)
        self._on_delivered = on_delivered
        self._cond = threading.Condition()
        self._pending: deque[Item] = deque()
        self._queued: set[tuple[str, str]] = set()  # (key, kind) pending or dropped
        self._sent_at: deque[float] = deque()  # monotonic times of recent deliveries
        self._failures = 0
        self._retry_at = 0.0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"klwatch-notify-{self.id}")
        self._thread.daemon = True  # never keeps the process alive: close() flushes first
        self._thread.start()

    # -- the watch loop's side --

    def queued(self, key: str, kind: str) -> bool:
        with self._cond:
            return (key, kind) in self._queued

    def put(self, items: Sequence[Item]) -> None:
        with self._cond:
            for item in items:
                if (item.key, item.kind) in self._queued:
                    continue
                if len(self._pending) >= self.settings.max_pending:
                    # Kept in _queued: not queued again this session; a restart retries it.
                    dropped = self._pending.popleft()
                    log.error(
                        "%s: more than %d messages undelivered, dropped %s in %s (step %s)",
                        self.label,
                        self.settings.max_pending,
                        dropped.alert.rule,
                        dropped.run_id,
                        dropped.alert.step,
                    )
                self._pending.append(item)
                self._queued.add((item.key, item.kind))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def close(self, flush_s: float) -> int:
        """Wait up to `flush_s` for what is pending to go out; return how many did not."""
        deadline = time.monotonic() + flush_s
        with self._cond:
            self._closing = True
            self._cond.notify()
            while self._pending and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            left = len(self._pending)
            self._pending.clear()  # the thread (a daemon) ends at its next wake-up
            self._cond.notify()
        return left

    # -- the sender thread --

    def _budget(self, now: float) -> int:
        """Messages that may still go out in the current rate window."""
        window = self.settings.digest_window_s
        while self._sent_at and now - self._sent_at[0] >= window:
            self._sent_at.popleft()
        return self.settings.digest_after - len(self._sent_at)

    def _seconds_until_ready(self, now: float) -> float | None:
        """None: nothing to send; else how long until sending is allowed (<= 0: now)."""
        if not self._pending:
            return None
        ready = self._retry_at
        if self._budget(now) < 1:  # wait for the oldest delivery to leave the window
            ready = max(ready, self._sent_at[0] + self.settings.digest_window_s)
        return ready - now

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing and not self._pending:
                        return
                    now = time.monotonic()
                    wait = self._seconds_until_ready(now)
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                batch = list(self._pending)
                budget = self._budget(now)
            for items in self._plan(batch, budget):
                if not self._deliver(items):
                    break

    def _plan(self, batch: list[Item], budget: int) -> list[list[Item]]:
        """One message per item while the rate window allows; else one digest of them all.
        What is active at startup always goes as one digest."""
        if len(batch) <= budget and not any(i.startup for i in batch):
            return [[item] for item in batch]
        return [batch]

    def _deliver(self, items: list[Item]) -> bool:
        try:
            if len(items) == 1 and not items[0].startup:
                title, body, severity = format_message(items[0])
            else:
                title, body, severity = format_digest(items)
            ok, reason = self._send(title, body, severity)
        except Exception as e:  # a bug here must not end the sender thread: retried, logged
            ok, reason = False, f"{type(e).__name__}: {e}"
        if ok:  # in the state file before it leaves `pending`: close() may then return
            self._on_delivered(self, items)
        with self._cond:
            now = time.monotonic()
            if ok:
                self._sent_at.append(now)
                done = {id(item) for item in items}
                self._pending = deque(i for i in self._pending if id(i) not in done)
                self._queued.difference_update((i.key, i.kind) for i in items)
                if self._failures:
                    log.warning(
                        "%s: delivered again after %d failed attempt(s)", self.label, self._failures
                    )
                self._failures, self._retry_at = 0, 0.0
            else:
                self._failures += 1
                doubling = 2.0 ** min(self._failures - 1, 40)  # no overflow after days down
                delay = min(self.settings.retry_initial_s * doubling, self.settings.retry_max_s)
                self._retry_at = now + delay
                log.warning(
                    "%s: could not deliver %d alert message(s) (%s); attempt %d failed, "
                    "next try in %.3g s — watching goes on",
                    self.label,
                    len(items),
                    reason,
                    self._failures,
                    delay,
                )
            self._cond.notify_all()
        return ok

    def _send(self, title: str, body: str, severity: str) -> tuple[bool, str]:
        from apprise import NotifyFormat

        result = self._apprise.notify(
            body=body,
            title=title,
            notify_type=_notify_type(severity),
            body_format=NotifyFormat.TEXT,
            timeout=self.settings.send_timeout_s,
        )
        if result:
            return True, ""
        reasons = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR")]
        return False, "; ".join(dict.fromkeys(reasons)) or "the receiver did not accept it"


# -- the notifier -----------------------------------------------------------------------------


@dataclass
class _RunIds:
    """The dashboard's id of a run: <root label>/<path below the root>, the root being the
    watched PATH it was found under and its label that directory's name (as RunStore labels
    its roots, suffixed -2, -3 … when two names collide)."""

    paths: Sequence[str]
    labels: list[tuple[Path, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        used: set[str] = set()
        for raw in self.paths:
            root = Path(raw)
            base = root.resolve().name or "root"
            label, n = base, 2
            while label in used:
                label, n = f"{base}-{n}", n + 1
            used.add(label)
            self.labels.append((root, label))

    def __call__(self, location: RunLocation) -> str:
        for root, label in self.labels:
            if location.path.is_relative_to(root):
                return _run_id(label, root, location)
        return _run_id(location.path.name, location.path, location)


@dataclass(frozen=True)
class _RunRef:
    """What every message about one run repeats: its state-file key, dashboard id, link."""

    key: str
    run_id: str
    link: str


class Notifier:
    """Feed it every run after each poll (`observe`); it works out what is new or newly
    cleared, and hands messages to one sender thread per URL."""

    def __init__(self, paths: Sequence[str], settings: NotifySettings) -> None:
        if not settings.urls:
            raise NotifyError("no notification URL given")
        services = check_urls(settings.urls)
        check_dashboard_url(settings.dashboard_url)
        self.settings = settings
        self.min_rank = SEVERITY_RANK[settings.min_severity]
        self.run_id = _RunIds(list(paths))
        self._refs: dict[RunLocation, _RunRef] = {}
        state_path = Path(settings.state) if settings.state else None
        state_path = state_path or default_state_path(paths, settings.urls)
        _check_state_path(state_path, paths)
        self.state = DeliveryState(state_path)
        try:
            self.state.save()  # fails here, at startup, if the file cannot be written
        except OSError as e:
            raise NotifyError(f"cannot write state file {state_path}: {e.strerror or e}") from e
        self.channels = [
            Channel(url, service, settings, self._delivered)
            for url, service in zip(settings.urls, services, strict=True)
        ]

    def observe(self, runs: Iterable[MonitoredRun], now: float | None = None) -> int:
        """Queue what each URL has not been told yet about these runs' alerts; return how
        many messages were queued. Call it after every poll, with every run."""
        first = not self.state.primed
        history: list[tuple[str, str]] = []
        todo: dict[Channel, list[Item]] = {channel: [] for channel in self.channels}
        for monitored in runs:
            alerts = monitored.alerts(now)
            alerts = [a for a in alerts if SEVERITY_RANK[a.severity] >= self.min_rank]
            if not alerts:
                continue
            run = monitored.run
            ref = self._ref(run.location)
            live = first and monitored.status(now) in LIVE_STATUSES
            for alert in alerts:
                key = f"{alert.rule} {alert.step} {ref.key}"
                if first and not (live and alert.active):  # history: known, never sent
                    history += [(key, RAISED), (key, CLEARED)]
                    continue
                item = Item(key, RAISED, alert, run.name, ref.run_id, str(run.location), ref.link)
                for channel in self.channels:
                    todo[channel] += self._todo(item, channel, startup=first)
        if first:
            self.state.mark(history, [c.id for c in self.channels])
            self.state.try_save(primed=True)
        for channel, items in todo.items():
            channel.put(items)  # all at once: a burst is seen as one, and sent as a digest
        return sum(len(items) for items in todo.values())

    def _ref(self, location: RunLocation) -> _RunRef:
        ref = self._refs.get(location)
        if ref is None:
            # (rule, first step, real path of the run): the same episode, the same key,
            # after a restart and whichever spelling of PATH was given.
            key = str(location.path.resolve()) + (f"#{location.key}" if location.key else "")
            run_id = self.run_id(location)
            link = dashboard_link(self.settings.dashboard_url, run_id)
            ref = self._refs[location] = _RunRef(key, run_id, link)
        return ref

    def _todo(self, item: Item, channel: Channel, startup: bool) -> list[Item]:
        told, queued = self.state.told, channel.queued
        if not (told(item.key, RAISED, channel.id) or queued(item.key, RAISED)):
            return [replace(item, startup=startup)]  # says so itself if it cleared already
        clear_due = (
            self.settings.clearing
            and item.alert.end_step is not None
            and not told(item.key, CLEARED, channel.id)
            and not queued(item.key, CLEARED)
        )
        # Queued behind the raise when that is still on its way: the order holds.
        return [replace(item, kind=CLEARED)] if clear_due else []

    def _delivered(self, channel: Channel, items: Sequence[Item]) -> None:
        self.state.mark([(i.key, m) for i in items for m in i.marks], [channel.id])
        self.state.try_save()

    def pending(self) -> int:
        return sum(c.pending() for c in self.channels)

    def close(self, flush_s: float = 5.0) -> None:
        """Give pending messages up to `flush_s` to go out; what does not is sent after the
        next start (it is not in the state file)."""
        deadline = time.monotonic() + flush_s
        for channel in self.channels:
            left = channel.close(max(0.0, deadline - time.monotonic()))
            if left:
                log.warning(
                    "%s: %d message(s) not delivered; they are sent when the watcher starts again",
                    channel.label,
                    left,
                )


def _check_state_path(state: Path, paths: Sequence[str]) -> None:
    """Nothing is ever written into a watched tree (it may be a read-only share)."""
    real = state.resolve()
    for raw in paths:
        root = Path(raw).resolve()
        if real == root or real.is_relative_to(root):
            raise NotifyError(
                f"state file {state} lies inside the watched path {raw}: klwatch never writes "
                "into run directories — choose a path outside (or leave --state out)"
            )
    if real.is_dir():
        raise NotifyError(f"state file {state} is a directory")


# -- the CLI's entry ---------------------------------------------------------------------------


def start_for_watch(
    paths: Sequence[str],
    rules_file: str | None,
    urls: Sequence[str] | None,
    dashboard_url: str | None,
    state: str | None,
) -> Notifier | None:
    """A running Notifier for `watch`, or None when no URL is configured (flag or [notify])."""
    settings = settings_for_watch(rules_file, urls, dashboard_url, state)
    if not settings.urls:
        if dashboard_url or state:
            raise NotifyError("--dashboard-url and --state need --notify URL (or [notify] urls)")
        return None
    _log_to_stderr()
    notifier = Notifier(paths, settings)
    log.info(
        "notifying %s; state %s%s",
        ", ".join(c.label for c in notifier.channels),
        notifier.state.path,
        " (first start: active alerts go out as one digest)" if notifier.state.first_start else "",
    )
    return notifier


def _log_to_stderr() -> None:
    """klwatch.notify lines on stderr; Apprise's own lines are folded into ours (its reason
    for a failure is quoted there) instead of printed beside them."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("klwatch notify: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    apprise_log = logging.getLogger("apprise")
    if not apprise_log.handlers:
        apprise_log.addHandler(logging.NullHandler())
    apprise_log.propagate = False


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a line is logged (not when the handler was
    made), from any thread."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Run names and Apprise's reasons reach a terminal: control characters escaped.
            print(printable(self.format(record)), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)
