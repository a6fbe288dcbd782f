"""Presets: trainer names → klwatch series, what KL means, and how a user overrides them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitor import RunWriter, load_run
from monitor.__main__ import main
from monitor.presets import (
    PRESETS,
    PresetError,
    detect_preset,
    load_preset_file,
    meaning_for,
    preset_from_spec,
)

# Names as each trainer logs them (TensorBoard via transformers adds train/): see
# docs/integrations.md for where each was checked.
GRPO = ["train/kl", "train/reward", "train/reward_std", "train/entropy",
        "train/completions/mean_length", "train/frac_reward_zero_std", "train/loss"]  # fmt: skip
PPO = ["train/objective/kl", "train/objective/scores", "train/objective/rlhf_reward",
       "train/objective/non_score_reward", "train/policy/entropy_avg", "train/lr"]  # fmt: skip
OPENRLHF = ["train/kl", "train/reward", "train/return", "train/response_length",
            "train/policy_loss"]  # fmt: skip
VERL_REWARD_KL = ["actor/reward_kl_penalty", "actor/reward_kl_penalty_coeff",
                  "critic/score/mean", "critic/rewards/mean", "actor/entropy",
                  "response_length/mean"]  # fmt: skip
VERL_KL_LOSS = ["actor/kl_loss", "actor/kl_coef", "critic/score/mean", "actor/entropy"]
VERL_NO_KL = ["actor/kl_loss", "actor/pg_loss", "critic/score/mean", "actor/entropy"]


@pytest.mark.parametrize(
    ("names", "preset", "kl", "units", "estimator"),
    [
        (GRPO, "trl_grpo", "train/kl", "per_token", "k3"),
        (PPO, "trl_ppo", "train/objective/kl", "per_sequence", "k1"),
        (OPENRLHF, "openrlhf", "train/kl", "per_token", "k1"),
        (VERL_REWARD_KL, "verl", "actor/reward_kl_penalty", "per_token", "k1"),
        (VERL_KL_LOSS, "verl_kl_loss", "actor/kl_loss", "per_token", "k3"),
        # no run.json: the contract's default unit, said on the page
        (["step_kl", "kl_mean", "kl_max"], "klwatch", "kl_mean", "per_token", None),
    ],
)
def test_presets_are_detected_from_the_names(
    names: list[str], preset: str, kl: str, units: str | None, estimator: str | None
) -> None:
    meaning = meaning_for(names, {})
    assert (meaning.preset, meaning.units, meaning.estimator) == (preset, units, estimator)
    assert meaning.mapping["kl_mean"] == kl and meaning.detected


def test_verl_with_kl_loss_zero_but_no_coefficient_has_no_kl_leash() -> None:
    # verl 0.7 logs actor/kl_loss = 0 even with the KL loss off; only kl_coef says it is on.
    meaning = meaning_for(VERL_NO_KL, {})
    assert meaning.preset == "verl_no_kl" and not meaning.kl_found
    assert meaning.kl_skipped_without_penalty


def test_grpo_and_rloo_told_apart_by_the_config() -> None:
    rloo_config = {"reward_clip_range": None, "normalize_advantages": False, "beta": 0.05}
    assert detect_preset(GRPO, rloo_config) is PRESETS["trl_rloo"]
    assert detect_preset(GRPO, {"loss_type": "dapo", "beta": 0.0}) is PRESETS["trl_grpo"]
    meaning = meaning_for(GRPO, {"config": rloo_config})
    assert (meaning.estimator, meaning.beta) == ("k1", 0.05)  # β from the config


def test_beta_from_the_config_only_when_not_logged() -> None:
    assert meaning_for(PPO, {"config": {"kl_coef": 0.05}}).beta == 0.05
    verl = meaning_for(VERL_REWARD_KL, {"config": {"beta": 9.0}})
    assert verl.beta is None and verl.beta_logged


def test_unknown_names_match_no_preset() -> None:
    meaning = meaning_for(["loss", "lr"], {})
    assert meaning.preset == "" and not meaning.kl_found


def test_forced_preset_wins_over_detection_and_run_json() -> None:
    forced = PRESETS["trl_rloo"]
    meaning = meaning_for(GRPO, {"preset": "trl_ppo"}, forced)
    assert meaning.preset == "trl_rloo" and not meaning.detected
    assert meaning_for(PPO, {"preset": "trl_grpo"}).preset == "trl_grpo"


def test_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'base = "trl_grpo"\nname = "mine"\nkl_units = "per_sequence"\n'
        '[series]\nkl_mean = ["my/kl", "kl"]\nbeta = "my/beta"\n'
    )
    preset = load_preset_file(path)
    meaning = meaning_for(["my/kl", "my/beta", "reward"], {}, preset)
    assert meaning.mapping == {"kl_mean": "my/kl", "beta": "my/beta", "reward_mean": "reward"}
    assert (meaning.preset, meaning.units, meaning.estimator) == ("mine", "per_sequence", "k3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[series]\nkl_avg = 'x'\n", "series.kl_avg is not a klwatch series"),
        ("colour = 'red'\n", "unknown preset key(s) ['colour']"),
        ("kl_units = 'per_word'\n", "kl_units must be one of"),
        ("base = 'nope'\n", "base = 'nope' is not a preset"),
        ("[series\n", "not valid TOML"),
        ("[series]\nkl_mean = 3\n", "series.kl_mean must be a name or a list of names"),
    ],
)
def test_bad_mapping_files_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PresetError, match=r"bad\.toml") as caught:
        load_preset_file(path)
    assert message in str(caught.value)


def test_unknown_preset_name() -> None:
    with pytest.raises(PresetError, match=r"unknown preset 'trl_dpo'.*trl_grpo"):
        preset_from_spec("trl_dpo", "--preset")


def _trl_named_run(path: Path, n: int = 400) -> None:
    """A metrics.jsonl with TRL's names (a hand-written logger copying them)."""
    rng = np.random.default_rng(0)
    with RunWriter(path, config={"kl_units": "per_token"}, require_kl_keys=False) as w:
        for step in range(n):
            kl = 0.02 * np.exp(step / 60) * (1 + 0.05 * rng.normal())
            w.log(step, kl=float(kl), reward=step / n)


def test_trl_names_in_metrics_jsonl_are_not_silently_healthy(tmp_path: Path, capsys) -> None:
    _trl_named_run(tmp_path / "r")
    run = load_run(tmp_path / "r")
    assert run.meaning.preset == "trl_grpo" and run.column("kl_mean")[-1] > 1
    code = main(["check", str(tmp_path / "r"), "--json"])
    (report,) = json.loads(capsys.readouterr().out)["runs"]
    assert code == 1
    rules = {a["rule"] for a in report["alerts"]}
    assert {"kl_high", "kl_growth"} <= rules
    assert report["source"]["preset"] == "trl_grpo"
    assert report["series"][:2] == ["kl_mean", "reward_mean"]


def test_unmapped_kl_is_reported_not_healthy(tmp_path: Path, capsys) -> None:
    with RunWriter(tmp_path / "r", config={}, require_kl_keys=False) as w:
        for step in range(10):
            w.log(step, my_divergence=0.05, loss=1.0)
    code = main(["check", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 1 and "kl_missing" in out and "KL series NOT FOUND" in out
    assert "no alerts" not in out
    # The same run read with a mapping file: KL found, no kl_missing.
    mapping = tmp_path / "map.toml"
    mapping.write_text('[series]\nkl_mean = "my_divergence"\n')
    code = main(["check", str(tmp_path / "r"), "--preset", str(mapping), "--json"])
    (report,) = json.loads(capsys.readouterr().out)["runs"]
    assert "kl_missing" not in {a["rule"] for a in report["alerts"]}
    assert report["source"]["preset"] == "custom" and report["series"][0] == "kl_mean"


def test_bad_preset_flag_exits_2(tmp_path: Path, capsys) -> None:
    _trl_named_run(tmp_path / "r", 5)
    assert main(["check", str(tmp_path / "r"), "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
