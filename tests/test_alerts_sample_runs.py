"""The alert engine on the committed runs of the reference trainer (sample_runs/README.md):
it flags the runaway, stays quiet on the healthy run, and names the other two correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.__main__ import main

SAMPLE_RUNS = Path(__file__).resolve().parent.parent / "sample_runs"


@pytest.fixture(scope="module")
def checked() -> dict[str, list[dict]]:
    """`python -m monitor check sample_runs --json --fail-on critical`: run name -> alerts."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", str(SAMPLE_RUNS), "--json", "--fail-on", "critical"])
    assert code == 1  # the no-penalty run's kl_growth is critical
    runs = json.loads(out.getvalue())["runs"]
    return {Path(r["path"]).name: r["alerts"] for r in runs}


def by_rule(alerts: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for alert in alerts:
        found.setdefault(alert["rule"], []).append(alert)
    return found


def test_all_four_runs_are_checked(checked: dict[str, list[dict]]) -> None:
    assert sorted(checked) == [
        "adaptive-healthy",
        "beta-too-high",
        "fixed-beta",
        "no-penalty-hacking",
    ]


def test_no_penalty_run_has_critical_unbounded_growth(checked: dict[str, list[dict]]) -> None:
    (growth,) = by_rule(checked["no-penalty-hacking"])["kl_growth"]
    assert growth["severity"] == "critical" and growth["end_step"] is None
    assert growth["step"] <= 400  # caught with a hundred steps of the run to spare


def test_healthy_adaptive_run_has_no_warning_or_critical(checked: dict[str, list[dict]]) -> None:
    assert [a for a in checked["adaptive-healthy"] if a["severity"] != "info"] == []


def test_beta_too_high_run_is_kl_low(checked: dict[str, list[dict]]) -> None:
    alerts = by_rule(checked["beta-too-high"])
    assert "kl_low" in alerts
    assert all(a["severity"] == "info" for a in checked["beta-too-high"])


def test_fixed_beta_plateau_is_high_but_not_growth(checked: dict[str, list[dict]]) -> None:
    alerts = by_rule(checked["fixed-beta"])
    assert "kl_high" in alerts and "kl_growth" not in alerts
