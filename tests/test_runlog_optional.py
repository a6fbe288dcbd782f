"""A run that logs only `kl_mean`: the writer takes it, `check` judges it, the page shows it
and says what is not logged (kl_max, β and reward are optional in the contract)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from monitor import REQUIRED_KEYS, RunLogError, RunWriter, load_run
from monitor.__main__ import main
from monitor.runlog import OPTIONAL_KEYS

APP = Path(__file__).resolve().parents[1] / "app.py"


def test_required_keys_are_step_time_and_kl_mean_only() -> None:
    assert REQUIRED_KEYS == ("step", "time", "kl_mean")
    assert set(OPTIONAL_KEYS) == {"kl_max", "beta", "reward_mean"}


def test_log_with_kl_mean_alone(tmp_path: Path) -> None:
    RunWriter(tmp_path / "r").log(0, kl_mean=0.01)  # the one-liner, as written
    run = load_run(tmp_path / "r")
    assert run.steps.tolist() == [0]
    assert run.column("kl_mean").tolist() == [0.01]
    record = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert set(record) == {"step", "time", "kl_mean"}


@pytest.mark.parametrize("given", [{"kl_max": 0.1}, {"beta": 0.1}, {"reward_mean": 0.5}])
def test_each_optional_key_alone_is_accepted(tmp_path: Path, given: dict[str, float]) -> None:
    with RunWriter(tmp_path) as writer:
        writer.log(0, kl_mean=0.02, **given)
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().split()]
    assert set(record) == {"step", "time", "kl_mean", *given}


def test_kl_mean_is_still_required(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    with pytest.raises(RunLogError, match=r"lacks required keys \['kl_mean'\]"):
        writer.log(0, kl_max=0.1, beta=0.1, reward_mean=0.5)
    writer.close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b""


def _kl_only_run(path: Path, kl: float = 0.03, steps: int = 300) -> Path:
    with RunWriter(path, config={"kl_units": "per_token", "target_kl": 0.05}) as writer:
        for step in range(steps):
            writer.log(step, kl_mean=kl * (1 + 0.01 * math.sin(step)))
    return path


def test_check_on_a_kl_only_run_says_what_is_not_logged(tmp_path: Path, capsys) -> None:
    _kl_only_run(tmp_path / "r")
    assert main(["check", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "rows 300" in out and "no max KL logged" in out and "β not logged" in out
    assert main(["check", str(tmp_path / "r"), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["runs"]
    assert report["alerts"] == [] and report["source"]["preset"] == "klwatch"


def test_kl_rules_still_judge_a_kl_only_run(tmp_path: Path, capsys) -> None:
    _kl_only_run(tmp_path / "r", kl=0.6)  # far above the healthy band
    assert main(["check", str(tmp_path / "r"), "--json"]) == 1
    (report,) = json.loads(capsys.readouterr().out)["runs"]
    assert "kl_high" in {a["rule"] for a in report["alerts"]}


def test_page_shows_a_kl_only_run_and_names_what_is_missing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kl_only_run(root / "kl-only")
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["run"] = "runs/kl-only"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [s["layout"].get("title", {}).get("text", "") for s in specs]
    assert any("max KL not logged" in t for t in titles), titles
    words = " ".join(str(e.value) for e in [*at.caption, *at.info, *at.markdown, *at.warning])
    assert "not logged" in words
