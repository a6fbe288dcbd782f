"""Never green while blind: records klwatch cannot read are an alert on the run
(records_unreadable), and one missing or unreadable PATH hides none of the others."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor import AlertEngine, MonitoredRun, load_run
from monitor.__main__ import Watcher, main
from monitor.alerts.config import AlertConfig
from tests.test_alerts import metrics_lines, noisy, trace, write_run

REPO = Path(__file__).resolve().parent.parent


def healthy_lines(n: int, start: int = 0) -> str:
    return metrics_lines(np.arange(start, start + n), trace(noisy(0.05, 0.1, n, seed=start)))


def damaged_root(root: Path) -> dict[str, Path]:
    """The issue's root: an all-damaged run, a binary-garbage run, a run whose last 100 lines
    are damaged, and a healthy run."""
    runs = {name: root / name for name in ("damaged", "garbage", "went-bad", "healthy")}
    for path in runs.values():
        path.mkdir(parents=True)
    (runs["damaged"] / "metrics.jsonl").write_text("not json\n" * 40 + "{oops\n" * 10)
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes().replace(b"\n", b"\x00")
    (runs["garbage"] / "metrics.jsonl").write_bytes(garbage + b"\n" + garbage[:999] + b"\n")
    went_bad = healthy_lines(100) + "".join(f"garbage {i}\n" for i in range(100))
    (runs["went-bad"] / "metrics.jsonl").write_text(went_bad)
    (runs["healthy"] / "metrics.jsonl").write_text(healthy_lines(300))
    return runs


def rules_of(path: Path) -> list[str]:
    run = load_run(path)
    engine = AlertEngine()
    engine.update(run)
    return [a.rule for a in engine.alerts_now(run)]


def test_each_blind_run_is_an_alert_and_the_healthy_one_is_not(tmp_path: Path) -> None:
    runs = damaged_root(tmp_path / "root")
    for name in ("damaged", "garbage", "went-bad"):
        assert "records_unreadable" in rules_of(runs[name]), name
    assert rules_of(runs["healthy"]) == []


def test_the_message_says_how_many_and_where(tmp_path: Path) -> None:
    runs = damaged_root(tmp_path / "root")
    run = load_run(runs["went-bad"])
    engine = AlertEngine()
    engine.update(run)
    (alert,) = [a for a in engine.alerts_now(run) if a.rule == "records_unreadable"]
    assert "100 of the last 100 lines of metrics.jsonl are damaged" in alert.message
    assert "metrics.jsonl:101" in alert.message  # the first bad line
    assert alert.severity == "warning" and alert.step == 99 and alert.value == 100


def test_it_clears_when_readable_rows_resume(tmp_path: Path) -> None:
    directory = write_run(tmp_path / "r", trace(noisy(0.05, 0.1, 50, seed=1)))
    monitored = MonitoredRun.open(directory)
    monitored.refresh()
    with open(directory / "metrics.jsonl", "a") as f:
        f.write("garbage\n" * 60)
    monitored.refresh()
    (alert,) = [a for a in monitored.alerts() if a.rule == "records_unreadable"]
    assert alert.active
    with open(directory / "metrics.jsonl", "a") as f:
        f.write(healthy_lines(200, start=50))
    monitored.refresh()
    (alert,) = [a for a in monitored.alerts() if a.rule == "records_unreadable"]
    assert alert.end_step == 249


def test_a_few_bad_lines_among_many_good_are_not_blindness(tmp_path: Path) -> None:
    lines = healthy_lines(300).splitlines(keepends=True)
    for i in (50, 120, 250, 290):
        lines[i] = "{torn\n"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text("".join(lines))
    assert "records_unreadable" not in rules_of(tmp_path / "r")


def test_a_metrics_file_that_cannot_be_opened_is_an_alert(tmp_path: Path) -> None:
    directory = write_run(tmp_path / "r", trace(noisy(0.05, 0.1, 50, seed=1)))
    monitored = MonitoredRun.open(directory)
    monitored.refresh()
    (directory / "metrics.jsonl").unlink()
    (directory / "metrics.jsonl").mkdir()  # as root, chmod cannot forbid a read; this can
    with pytest.raises(OSError):
        monitored.refresh()
    (alert,) = [a for a in monitored.alerts() if a.rule == "records_unreadable"]
    assert "cannot read this run" in alert.message and "metrics.jsonl" in alert.message


def test_check_reports_every_run_and_names_the_missing_root(tmp_path: Path) -> None:
    runs = damaged_root(tmp_path / "root")
    missing = tmp_path / "not-mounted"
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(missing), str(tmp_path / "root"), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{missing}: no such file or directory" in proc.stderr
    document = json.loads(proc.stdout)
    by_name = {Path(r["path"]).name: {a["rule"] for a in r["alerts"]} for r in document["runs"]}
    assert set(by_name) == set(runs)
    assert all("records_unreadable" in by_name[n] for n in ("damaged", "garbage", "went-bad"))
    assert by_name["healthy"] == set()
    assert document["unreadable_paths"] == [f"{missing}: no such file or directory"]


def test_check_text_exits_1_on_a_blind_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = damaged_root(tmp_path / "root")
    assert main(["check", str(runs["damaged"])]) == 1  # a warning: the default --fail-on
    out = capsys.readouterr().out
    assert "records_unreadable" in out and "50 bad records skipped" in out


def test_watch_names_the_missing_path_and_keeps_watching_the_rest(tmp_path: Path) -> None:
    runs = damaged_root(tmp_path / "root")
    watcher = Watcher([str(tmp_path / "gone"), str(runs["went-bad"])], AlertConfig())
    fresh = watcher.poll(now=0)
    assert watcher.path_problems == [f"{tmp_path / 'gone'}: no such file or directory"]
    assert [a.rule for _, a in fresh] == ["records_unreadable"]
    assert watcher.poll(now=0) == []  # said once


def test_watch_with_nothing_readable_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["watch", str(tmp_path / "gone"), "--iterations", "3", "--interval", "0"])
    assert code == 2 and "no such file or directory" in capsys.readouterr().err


def test_a_path_without_runs_is_named_beside_the_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A regular file given as a root with no run: named, and the good PATH is still reported.
    runs = damaged_root(tmp_path / "root")
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    assert main(["check", str(stray), str(runs["healthy"])]) == 2
    captured = capsys.readouterr()
    assert "healthy" in captured.out and f"{stray}: no runs found" in captured.err
