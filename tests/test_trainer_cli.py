"""`python -m trainer`'s flags are generated from TrainConfig (trainer/config.py): one flag
per field (or a stated reason why not), the config's allowed values as the flag's choices,
its help and default in --help, and only the flags given override a --config file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from trainer.__main__ import build_parser, config_flags, main, resolve
from trainer.config import CHOICES, FIELD_TYPES, FIELDS, ConfigError, TrainConfig, build_config

# The flags that are no config field; the flags the CLI had before it was generated (the docs,
# `make run`, sample_runs/README.md and run.json commands use them).
RUN_CONTROL = {"help", "config", "resume", "quiet"}
BEFORE = [
    "--run-dir",
    "--steps",
    "--seed",
    "--device",
    "--kl-controller",
    "--kl-coef",
    "--target-kl",
    "--kl-estimator",
    "--reward",
    "--lr",
    "--batch-size",
    "--max-new-tokens",
    "--temperature",
    "--top-p",
    "--top-k",
    "--micro-batch-size",
    "--model",
    "--lora",
    "--lora-r",
    "--model-dtype",
    "--gradient-checkpointing",
    "--reward-model",
    "--reward-label",
    "--prompts",
    "--max-prompt-tokens",
    "--config",
    "--resume",
    "--quiet",
]


def _actions() -> dict[str, argparse.Action]:
    return {a.dest: a for a in build_parser()._actions}


def _flagged() -> list[str]:
    return [name for name, f in FIELDS.items() if "no_flag" not in f.metadata]


def test_every_field_is_a_flag_or_says_why_not() -> None:
    actions = _actions()
    for name, f in FIELDS.items():
        assert f.metadata.get("help"), f"{name}: no help text"
        if "no_flag" in f.metadata:
            assert f.metadata["no_flag"].strip(), f"{name}: no reason for having no flag"
            assert name not in actions
        else:
            assert actions[name].option_strings == ["--" + name.replace("_", "-")]
    assert set(actions) == set(_flagged()) | RUN_CONTROL
    assert {s for a in actions.values() for s in a.option_strings} >= set(BEFORE)


def test_flag_choices_are_the_configs_allowed_values() -> None:
    actions = _actions()
    for name in _flagged():
        assert actions[name].choices == CHOICES.get(name), name
        if FIELD_TYPES[name] is bool:
            assert isinstance(actions[name], argparse._StoreTrueAction)  # --lora, as before
        else:
            assert actions[name].type is FIELD_TYPES[name], name
    # validate() checks the same tuples
    for name, allowed in CHOICES.items():
        with pytest.raises(ConfigError, match=name):
            TrainConfig(**{name: "not-" + allowed[0]}).validate()


@pytest.mark.parametrize("name", sorted(set(CHOICES) & set(_flagged())))
def test_a_bad_choice_exits_2_naming_the_flag(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(SystemExit) as exc:
        main([flag, "bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: invalid choice: 'bogus'" in err, err
    assert all(repr(value) in err for value in CHOICES[name]), err


def test_parsing_round_trips_the_defaults() -> None:
    parser = build_parser()
    assert config_flags(parser.parse_args([])) == {}  # nothing given: nothing overrides
    assert build_config(TrainConfig().to_dict(), config_flags(parser.parse_args([]))) == (
        TrainConfig()
    )
    defaults = TrainConfig()
    argv: list[str] = []
    for name in _flagged():
        value = getattr(defaults, name)
        if FIELD_TYPES[name] is bool:
            argv += ["--" + name.replace("_", "-")] if value else []
        else:
            argv += ["--" + name.replace("_", "-"), str(value)]
    given = config_flags(parser.parse_args(argv))
    assert build_config(TrainConfig().to_dict(), given) == defaults
    assert all(type(v) is FIELD_TYPES[k] for k, v in given.items())


def test_help_shows_each_fields_help_default_and_choices(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    entries: dict[str, str] = {}  # flag -> its invocation and help, on one line
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0]
            entries[flag] = line
        elif line.startswith("    ") and entries:
            entries[flag] += " " + line.strip()
    defaults = TrainConfig()
    for name in _flagged():
        line = " ".join(entries["--" + name.replace("_", "-")].split())
        f, value = FIELDS[name], getattr(defaults, name)
        assert f.metadata["help"] in line
        shown = "off" if FIELD_TYPES[name] is bool else '""' if value == "" else str(value)
        assert line.endswith(f"(default: {shown})"), line
        if name in CHOICES:
            assert "{" + ",".join(CHOICES[name]) + "}" in line


def test_only_given_flags_override_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"steps": 5, "lr": 1e-3, "kl_controller": "fixed"}))
    parser = build_parser()
    argv = ["--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--steps", "7", "--lora-r", "8"]
    resolved, resume_state = resolve(parser.parse_args(argv), parser)
    assert resume_state is None
    assert (resolved.steps, resolved.lr, resolved.kl_controller) == (7, 1e-3, "fixed")
    assert resolved.lora_r == 8 and resolved.seed == TrainConfig().seed
