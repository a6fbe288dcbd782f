"""`python -m monitor check|watch`: the output contract and exit statuses."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor import RunWriter
from monitor.__main__ import Watcher, main
from monitor.alerts.config import AlertConfig
from tests.test_alerts import metrics_lines, noisy, trace, write_run

REPO = Path(__file__).resolve().parent.parent


def healthy(seed: int = 50) -> dict[str, np.ndarray]:
    return trace(noisy(0.05, 0.1, 1000, seed))


def spiky() -> dict[str, np.ndarray]:  # one warning (kl_spike)
    columns = healthy(51)
    columns["kl_max"][600] *= 20
    return columns


def broken() -> dict[str, np.ndarray]:  # one critical (kl_nonfinite)
    columns = healthy(52)
    columns["kl_mean"][700] = math.nan
    return columns


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "runs" / "a", broken())
    code, out, err = run_main(capsys, "check", str(tmp_path / "runs"), "--json")
    assert code == 1 and err == ""
    document = json.loads(out)  # exactly one JSON document; NaN became null
    assert list(document) == ["runs", "unreadable_paths"] and document["unreadable_paths"] == []
    (run,) = document["runs"]
    assert list(run) == [
        "path",
        "name",
        "rows",
        "last_step",
        "skipped",
        "alerts",
        "source",
        "series",
        "health_series",
    ]
    assert run["source"] == {
        "format": "klwatch",
        "preset": "klwatch",
        "kl_units": "per_token",
        "kl_estimator": None,
        "key": None,
    }
    assert run["series"][:4] == ["kl_mean", "kl_max", "beta", "reward_mean"]
    assert run["health_series"] == []  # this trace logs no health series
    assert (run["path"], run["name"], run["rows"], run["last_step"], run["skipped"]) == (
        str(tmp_path / "runs" / "a"),
        "t",
        1000,
        999,
        0,
    )
    (alert,) = run["alerts"]
    assert list(alert) == ["rule", "severity", "step", "end_step", "metric", "value", "message"]
    assert (alert["rule"], alert["step"], alert["end_step"], alert["value"]) == (
        "kl_nonfinite",
        700,
        701,
        None,
    )


def test_exit_statuses_follow_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok, warn, crit = (
        write_run(tmp_path / n, c())
        for n, c in [("ok", healthy), ("warn", spiky), ("crit", broken)]
    )
    assert run_main(capsys, "check", str(ok))[0] == 0
    assert run_main(capsys, "check", str(warn))[0] == 1
    assert run_main(capsys, "check", str(warn), "--fail-on", "critical")[0] == 0
    assert run_main(capsys, "check", str(crit), "--fail-on", "critical")[0] == 1
    assert run_main(capsys, "check", str(ok), str(crit), "--json", "--fail-on", "critical")[0] == 1


def test_root_is_searched_recursively(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "root" / "team" / "deep" / "r1", healthy())
    write_run(tmp_path / "root" / "r2", spiky())
    (tmp_path / "root" / "not-a-run").mkdir()
    code, out, _ = run_main(capsys, "check", str(tmp_path / "root"), "--json")
    paths = sorted(Path(r["path"]).name for r in json.loads(out)["runs"])
    assert (code, paths) == (1, ["r1", "r2"])


def test_plain_output_is_a_table_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "a", spiky())
    write_run(tmp_path / "b", healthy())
    code, out, _ = run_main(capsys, "check", str(tmp_path))
    assert code == 1
    assert "SEVERITY" in out and "kl_spike" in out and "600" in out
    assert "no alerts" in out


def write_grpo_like_run(directory: Path, steps: int = 100) -> Path:
    """Entropy, gradient norm and truncation logged; zero-spread and rollout series not."""
    writer = RunWriter(directory, config={"target_kl": 0.05}, name="grpo")
    for step in range(steps):
        writer.log(
            step,
            kl_mean=0.03,
            kl_max=0.1,
            beta=0.04,
            reward_mean=0.5,
            entropy=1.2,
            grad_norm=0.8,
            truncated_frac=0.05,
            my_metric=0.1,
        )
    writer.close("finished")
    return directory


def test_check_names_the_health_series_found_and_not_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_grpo_like_run(tmp_path / "grpo")
    code, out, _ = run_main(capsys, "check", str(tmp_path / "grpo"))
    lines = [line.strip() for line in out.splitlines()]
    assert (
        "health series: entropy, grad_norm, truncated_frac "
        "(not logged: rollout mismatch, zero_std_frac)"
    ) in lines
    assert code == 0 and "no alerts" in out  # absence is said, never alerted

    code, out, _ = run_main(capsys, "check", str(tmp_path / "grpo"), "--json")
    (run,) = json.loads(out)["runs"]
    assert run["health_series"] == ["entropy", "grad_norm", "truncated_frac"]
    # `series` keeps listing every series, health or not
    assert set(run["series"]) >= {"kl_mean", "entropy", "grad_norm", "truncated_frac", "my_metric"}


def test_check_says_when_no_health_series_is_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "a", healthy())
    _, out, _ = run_main(capsys, "check", str(tmp_path / "a"))
    assert (
        "  health series: none (not logged: entropy, grad_norm, truncated_frac, "
        "rollout mismatch, zero_std_frac)"
    ) in out.splitlines()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "{tmp}/missing"], "no such file or directory"),
        (["check", "{tmp}/empty"], "no runs found"),
        (["check", "{tmp}/ok", "--rules", "{tmp}/bad.toml"], "unknown key 'kl_spike.zz'"),
        (["check", "{tmp}/ok", "--rules", "{tmp}/nope.toml"], "cannot read rules file"),
        (["check"], "PATH"),
        (["check", "{tmp}/ok", "--fail-on", "info"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_and_input_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    write_run(tmp_path / "ok", healthy())
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.toml").write_text("[kl_spike]\nzz = 1\n")
    code, out, err = run_main(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and out == ""
    assert needle in err and "Traceback" not in err


def test_module_entry_point_bad_path(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(tmp_path / "nope"), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{tmp_path / 'nope'}: no such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_watcher_reports_new_alerts_once(tmp_path: Path) -> None:
    columns = spiky()
    directory = write_run(tmp_path / "runs" / "live", {k: v[:300] for k, v in columns.items()})
    watcher = Watcher([str(tmp_path / "runs")], AlertConfig())
    assert watcher.poll(now=0) == []
    with open(directory / "metrics.jsonl", "a") as f:
        f.write(metrics_lines(np.arange(300, 1000), {k: v[300:] for k, v in columns.items()}))
    fresh = watcher.poll(now=0)
    assert [(run.name, a.rule, a.step) for run, a in fresh] == [("t", "kl_spike", 600)]
    assert watcher.poll(now=0) == []
    write_run(tmp_path / "runs" / "later", {k: v.copy() for k, v in columns.items()})
    assert [a.step for _, a in watcher.poll(now=0)] == [600]  # a new run is picked up


def test_watch_command_prints_alert_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "w", broken())
    code, out, _ = run_main(capsys, "watch", str(tmp_path / "w"), "--iterations", "1", "--json")
    (line,) = out.splitlines()
    assert code == 0 and json.loads(line)["rule"] == "kl_nonfinite"
