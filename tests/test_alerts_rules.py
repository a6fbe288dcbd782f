"""Thresholds: defaults, TOML overrides, run.json `alerts` overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor import AlertConfig, AlertEngine, RulesError, load_run
from monitor.alerts import resolve_thresholds
from monitor.alerts.config import load_rules_file
from monitor.alerts.registry import BLOCK_RULES, ROW_RULES
from tests.test_alerts import HEALTHY_INFO, alerts_for, noisy, rules, trace, write_run


def high_trace() -> dict[str, np.ndarray]:
    return trace(noisy(0.15, 0.05, 2000, seed=40))  # above the default band (0.1)


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("block_rows = 25\n[band]\nhigh = 0.2\n[kl_low]\nenabled = false\n")
    config = load_rules_file(rules_file)
    assert (config.block_rows, config.band.high, config.kl_low.enabled) == (25, 0.2, False)
    assert config.band.low == AlertConfig().band.low  # untouched keys keep their defaults
    assert "kl_high" in rules(alerts_for(tmp_path, high_trace()))
    assert "kl_high" not in rules(alerts_for(tmp_path, high_trace(), config=config))


def test_run_json_alerts_section_overrides_the_file(tmp_path: Path) -> None:
    base = AlertConfig().merged({"band": {"high": 0.12}}, "test")
    info = {**HEALTHY_INFO, "alerts": {"band": {"high": 0.2}, "kl_spike": {"z": 8}}}
    assert alerts_for(tmp_path, high_trace(), info=info, config=base) == []
    info["alerts"] = {"kl_high": {"severity": "critical"}}
    (alert,) = alerts_for(tmp_path, high_trace(), info=info)
    assert (alert.rule, alert.severity) == ("kl_high", "critical")


def test_unknown_key_in_toml_names_key_and_file(tmp_path: Path) -> None:
    rules_file = tmp_path / "team.toml"
    rules_file.write_text("[kl_spike]\nzz = 3\n")
    with pytest.raises(RulesError, match=r"team\.toml.*'kl_spike\.zz'"):
        load_rules_file(rules_file)
    rules_file.write_text("[kl_spikes]\nz = 3\n")
    with pytest.raises(RulesError, match="unknown key 'kl_spikes'"):
        load_rules_file(rules_file)


def test_unknown_key_in_run_json_is_an_alert_and_the_defaults_keep_watching(
    tmp_path: Path,
) -> None:
    info = {**HEALTHY_INFO, "alerts": {"band": {"hihg": 0.2}}}
    run = load_run(write_run(tmp_path / "r", high_trace(), info))
    engine = AlertEngine()
    engine.update(run)
    alerts = {a.rule: a for a in engine.alerts_now(run)}
    invalid = alerts["alert_config_invalid"]
    assert invalid.active and invalid.severity == "warning"
    assert "run.json" in invalid.message and "'band.hihg'" in invalid.message
    assert "kl_high" in alerts  # watched with the default band


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[band]\nhigh = 'x'\n", "must be a number"),
        ("[kl_spike]\nseverity = 'loud'\n", "one of info, warning, critical"),
        ("block_rows = 0\n", "whole number >= 1"),
        ("[kl_spike]\nenabled = 1\n", "true or false"),
        ("band = 3\n", "table of settings"),
        ("[band\n", "not valid TOML"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    rules_file = tmp_path / "r.toml"
    rules_file.write_text(text)
    with pytest.raises(RulesError, match=message):
        load_rules_file(rules_file)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules_file(tmp_path / "nope.toml")


def test_windows_round_up_to_blocks() -> None:
    config = AlertConfig()
    assert config.blocks(200) == 4 and config.blocks(201) == 5 and config.blocks(1) == 1


def test_a_disabled_rule_builds_no_detector() -> None:
    adaptive = {"kl": {"controller": "adaptive"}}  # beta_saturated judges only such runs
    for rule, build in {**ROW_RULES, **BLOCK_RULES}.items():
        on = AlertConfig()
        off = on.merged({rule: {"enabled": False}}, "test")
        assert build(on, resolve_thresholds(on, adaptive)) is not None, rule
        assert build(off, resolve_thresholds(off, adaptive)) is None, rule
