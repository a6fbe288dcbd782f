"""`python -m monitor check|watch PATH ...` (= `klwatch check|watch`, one parser in
monitor/cli.py): alerts for run directories, for CI, cron, a shell.

check  one pass over every run found; exit 0 (nothing reaches --fail-on), 1 (something
       does) or 2 (usage error, unreadable input — a message on stderr, never a traceback).
watch  tail the runs and print each new alert as it is raised (Ctrl-C stops); with
       --notify URL also send it to Slack, Discord, e-mail, … (monitor/notify.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from monitor.alerts import SEVERITY_RANK, Alert
from monitor.alerts.config import AlertConfig, RulesError, load_rules_file
from monitor.dashboard.run_view import health_row
from monitor.monitored import MonitoredRun
from monitor.presets import Preset, PresetError, preset_from_spec
from monitor.run import Run
from monitor.sources import RunLocation, locate_path, looked_for
from monitor.sources.bucket import is_url, mirror_for
from monitor.text import printable

EXIT_OK, EXIT_ALERT, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN_RUNS = 20  # a progress bar only when there are this many runs (and a TTY)


class InputError(Exception):
    """A PATH, rules file or run that cannot be read: reported on stderr, exit 2."""


@dataclass
class RunReport:
    run: Run
    alerts: list[Alert] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        meaning = run.meaning
        return {
            "path": run.where,
            "name": run.name,
            "rows": run.n_rows,
            "last_step": run.last_step,
            "skipped": run.skipped,
            "alerts": [a.to_dict() for a in self.alerts],
            "source": {
                "format": run.format,
                "preset": meaning.preset or None,
                "kl_units": meaning.units,
                "kl_estimator": meaning.estimator,
                "key": run.location.key,
            },
            "series": run.series_names,
            "health_series": list(health_row(run.series_names).found),
        }


# -- finding runs -----------------------------------------------------------------------------


NO_RUNS_HINT = "looked for " + looked_for()


@dataclass
class Found:
    """The runs under the PATHs, and why each PATH that gave none could not be read."""

    locations: list[RunLocation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one sentence per unreadable PATH


def run_locations(paths: Sequence[str]) -> Found:
    """Each PATH as a run (directory, verl JSONL, trackio DB), or the runs below it. A PATH
    that is missing or unreadable is named in `problems`; it hides none of the others."""
    found: dict[RunLocation, None] = {}
    problems = []
    for raw in paths:
        path = Path(raw)
        if is_url(raw):  # a bucket: its runs are read from a local mirror kept in sync
            mirror = mirror_for(raw)
            mirror.sync_if_due()
            if mirror.problem:
                problems.append(mirror.problem)
                continue
            path = mirror.local
        try:
            if not path.exists():
                problems.append(f"{raw}: no such file or directory")
                continue
            locations = locate_path(path)
        except OSError as e:
            problems.append(f"{raw}: cannot read ({e.strerror or e})")
            continue
        if not locations:
            problems.append(f"{raw}: no runs found ({NO_RUNS_HINT})")
            continue
        found.update(dict.fromkeys(locations))
    return Found(list(found), problems)


def _progress(items: list[RunLocation], stream: TextIO) -> Iterator[RunLocation]:
    if len(items) < PROGRESS_MIN_RUNS or not stream.isatty():
        return iter(items)
    from tqdm import tqdm  # only for interactive use

    return iter(tqdm(items, desc="checking runs", unit="run", file=stream))


# -- check ------------------------------------------------------------------------------------


def check_paths(
    paths: Sequence[str],
    config: AlertConfig,
    now: float | None = None,
    stderr: TextIO = sys.stderr,
    preset: Preset | None = None,
) -> tuple[list[RunReport], list[str]]:
    """A report per run found, and the PATHs that could not be read. A run whose data
    cannot be opened is reported with its records_unreadable alert, not dropped."""
    found = run_locations(paths)
    reports = []
    for location in _progress(found.locations, stderr):
        monitored = MonitoredRun.open(location, config, preset)
        with contextlib.suppress(OSError):  # kept in Run.read_error: an alert on the run
            monitored.refresh()
        reports.append(RunReport(monitored.run, monitored.alerts(now)))
    return reports, found.problems


def describe_source(run: Run) -> str:
    """One line: where the rows came from and what the KL means (or that it was not found)."""
    meaning = run.meaning
    parts = [f"source {run.format_label}"]
    if meaning.preset:
        how = "detected" if meaning.detected else "chosen"
        parts.append(f"preset {meaning.preset} ({how}: {meaning.trainer})")
    else:
        parts.append("preset: none matched the logged names (use --preset)")
    if meaning.kl_found:
        estimator = f", {meaning.estimator}" if meaning.estimator else ""
        parts.append(f"KL = {meaning.mapping['kl_mean']} ({meaning.unit_label}{estimator})")
    else:
        parts.append("KL series NOT FOUND")
    if meaning.kl_found and not meaning.kl_max_logged:
        parts.append("no max KL logged")
    if not meaning.beta_known:
        parts.append("β not logged")
    elif not meaning.beta_logged:
        parts.append(f"β = {meaning.beta:g} (from the config)")
    return "; ".join(parts)


def describe_health(run: Run) -> str:
    """One line: the health series the run logs, and the Health row's signals it does not
    (said, not alerted: their rules are not judged)."""
    row = health_row(run.series_names)
    line = "health series: " + (", ".join(row.found) or "none")
    if row.missing:
        line += " (not logged: " + ", ".join(chart.short for chart in row.missing) + ")"
    return line


def fails(reports: Sequence[RunReport], fail_on: str) -> bool:
    limit = SEVERITY_RANK[fail_on]
    return any(SEVERITY_RANK[a.severity] >= limit for r in reports for a in r.alerts)


def format_table(report: RunReport) -> str:
    run = report.run
    last = "-" if run.last_step is None else run.last_step
    # Names, paths and messages come from files: control characters are escaped (printable).
    head = f"{printable(run.name)}  ({printable(run.where)})  rows {run.n_rows}, "
    head += f"last step {last}"
    if run.skipped:
        head += f", {run.skipped} bad records skipped"
    head += "\n  " + printable(describe_source(run))
    head += "\n  " + printable(describe_health(run))
    if not report.alerts:
        return head + "\n  no alerts"
    rows: list[tuple[str, ...]] = [
        ("SEVERITY", "RULE", "STEP", "END", "METRIC", "VALUE", "MESSAGE")
    ]
    for a in report.alerts:
        end = "active" if a.end_step is None else str(a.end_step)
        cells = (a.severity, a.rule, str(a.step), end, a.metric, f"{a.value:.4g}", a.message)
        rows.append(tuple(printable(c) for c in cells))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[6]
        for r in rows
    ]
    return "\n".join([head, *lines])


def cmd_check(args: argparse.Namespace, config: AlertConfig) -> int:
    reports, problems = check_paths(args.paths, config, preset=args.preset)
    if args.json and reports:
        document = {"runs": [r.to_dict() for r in reports], "unreadable_paths": problems}
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    elif reports:
        sys.stdout.write("\n\n".join(format_table(r) for r in reports) + "\n")
    for problem in problems:  # after the runs that could be read: one bad PATH hides nothing
        print(f"klwatch: {printable(str(problem))}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    return EXIT_ALERT if fails(reports, args.fail_on) else EXIT_OK


# -- watch ------------------------------------------------------------------------------------


class Watcher:
    """Polls run directories under PATHs: new runs are picked up, each refresh is fed to the
    run's engine, and `poll()` returns the alerts raised since the previous poll."""

    def __init__(
        self, paths: Sequence[str], config: AlertConfig, preset: Preset | None = None
    ) -> None:
        self.paths = list(paths)
        self.config = config
        self.preset = preset
        self.runs: dict[RunLocation, MonitoredRun] = {}
        self._facts_seen: set[tuple[Path, str, int]] = set()  # run-rule alerts printed
        self.path_problems: list[str] = []  # PATHs unreadable at the last poll

    def poll(self, now: float | None = None) -> list[tuple[Run, Alert]]:
        found = run_locations(self.paths)
        self.path_problems = found.problems
        for location in found.locations:
            if location not in self.runs:
                self.runs[location] = MonitoredRun.open(location, self.config, self.preset)
        fresh: list[tuple[Run, Alert]] = []
        for monitored in self.runs.values():
            run = monitored.run
            try:
                new_alerts = monitored.refresh()
            except OSError:
                new_alerts = []  # kept in Run.read_error: records_unreadable says so
            fresh.extend((run, a) for a in new_alerts)
            for fact in monitored.engine.check_run_rules(run, now):
                if (run.path, fact.rule, fact.step) not in self._facts_seen:
                    self._facts_seen.add((run.path, fact.rule, fact.step))
                    fresh.append((run, fact))
        return fresh


def format_line(run: Run, alert: Alert) -> str:
    line = f"[{alert.severity}] {run.name} step {alert.step} {alert.rule}: {alert.message}"
    return printable(line)  # names and messages come from files: no control characters


def cmd_watch(args: argparse.Namespace, config: AlertConfig) -> int:
    from monitor import notify  # Apprise is needed by watch --notify only

    try:
        notifier = notify.start_for_watch(
            args.paths, args.rules, args.notify, args.dashboard_url, args.state
        )
    except notify.NotifyError as e:
        raise InputError(str(e)) from e
    watcher = Watcher(args.paths, config, args.preset)
    cycle = 0
    said: list[str] = []
    try:
        with stop_on_signals() as stop:
            while not stop.is_set():
                fresh = watcher.poll()
                if watcher.path_problems != said:  # named once, and again when it changes
                    said = watcher.path_problems
                    for problem in said:
                        print(f"klwatch: {printable(str(problem))}", file=sys.stderr, flush=True)
                if cycle == 0 and said and not watcher.runs:
                    return EXIT_USAGE  # nothing at all to watch: a typo, not a late mount
                for run, alert in fresh:
                    if args.json:
                        record = {"path": run.where, **alert.to_dict()}
                        line = json.dumps(record, allow_nan=False)
                    else:
                        line = format_line(run, alert)
                    print(line, flush=True)
                if notifier:
                    notifier.observe(watcher.runs.values())
                cycle += 1
                if args.iterations and cycle >= args.iterations:
                    break
                stop.wait(args.interval)
    finally:
        if notifier:
            notifier.close()  # pending messages get a few seconds to go out
    return EXIT_OK


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM (systemd's stop) set an event the watch loop checks between polls,
    instead of raising KeyboardInterrupt wherever the main thread happens to be (inside a
    read, a lock, a queue): the loop ends cleanly and flushes what is pending. A second
    signal while flushing acts as before (Ctrl-C interrupts the flush)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- entry point ------------------------------------------------------------------------------


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="run, root of runs, or bucket URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--rules", metavar="FILE", help="TOML file overriding alert thresholds")
    p.add_argument(
        "--preset",
        metavar="NAME|FILE",
        help="how to read the trainer's metric names: a preset (trl_grpo, trl_rloo, "
        "trl_ppo, openrlhf, verl, verl_kl_loss, klwatch) or a TOML mapping file "
        "(default: detected per run from the names it logs)",
    )


def add_check_arguments(check: argparse.ArgumentParser) -> None:
    add_common_arguments(check)
    check.add_argument(
        "--fail-on",
        choices=("warning", "critical"),
        default="warning",
        help="lowest severity that makes the exit status 1 (default: warning)",
    )


def add_watch_arguments(watch: argparse.ArgumentParser) -> None:
    add_common_arguments(watch)
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    watch.add_argument("--iterations", type=int, default=0, help="stop after N polls (0: never)")
    watch.add_argument(
        "--notify",
        action="append",
        metavar="URL",
        help="also send each new alert (and, once, its clearing) to this Apprise URL: "
        "slack://…, discord://…, workflows://… (Teams), mailto://…, ntfy://…, "
        "json://host:port/path; repeatable (default: [notify] urls of --rules)",
    )
    watch.add_argument(
        "--dashboard-url",
        metavar="URL",
        help="messages link to the run on this dashboard (URL?run=<root>/<run>)",
    )
    watch.add_argument(
        "--state",
        metavar="FILE",
        help="where what was sent is remembered (default: "
        "$XDG_STATE_HOME/klwatch/notify-<hash of PATHs and URLs>.json)",
    )


def run_command(args: argparse.Namespace) -> int:
    """`check` or `watch`, parsed by the one command line (monitor.cli)."""
    try:
        config = load_rules_file(args.rules) if args.rules else AlertConfig()
        args.preset = preset_from_spec(args.preset, "--preset") if args.preset else None
        if args.command == "check":
            return cmd_check(args, config)
        return cmd_watch(args, config)
    except (InputError, RulesError, PresetError) as e:
        print(f"klwatch: {printable(str(e))}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m monitor …` is `klwatch …`: one parser (monitor.cli)."""
    from monitor.cli import main as klwatch_main

    return klwatch_main(argv)


if __name__ == "__main__":
    sys.exit(main())
