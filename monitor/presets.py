"""Names and meaning: which of a trainer's metrics are klwatch's series, and what its KL is.

Every format hands over raw metric names (`train/kl`, `objective/kl`, `actor/kl_loss`, …). A
`Preset` says which raw name is `kl_mean`, `beta`, `reward_mean`, … and what the KL number
means (per token or per sequence, which estimator). Presets are detected from the names a run
logs, and can be forced by name (`--preset trl_ppo`), by a TOML mapping file, or by run.json
(`"preset": "trl_ppo"` or a mapping table).

This module owns "what KL means" for every run: `meaning_for(...)` is the one place that
decides it; alerts, charts and the page all read the `KLMeaning` it returns.

Where each name comes from (checked against the trainers' sources): docs/integrations.md.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# klwatch's own series, in the order the page lists them.
KLWATCH_SERIES = (
    "kl_mean",
    "kl_max",
    "beta",
    "reward_mean",
    "reward_total",
    "entropy",
    "response_len",
    # the health signals around KL (docs/run-format.md, "Health series")
    "grad_norm",
    "truncated_frac",
    "zero_std_frac",
    "reward_std",
    "clip_frac",
    "approx_kl",
    "loss",
    "rollout_prob_diff",
    "rollout_prob_diff_max",
    "rollout_logp_diff",
    "rollout_logp_diff_max",
    "rollout_is_ratio",
    "rollout_is_ratio_min",
    "rollout_is_ratio_max",
    "rollout_prob_corr",
    "rollout_kl",
)
# The health series among them: charted in the page's Health row, listed by `check`.
HEALTH_SERIES = KLWATCH_SERIES[KLWATCH_SERIES.index("entropy") :]
KL_UNITS = ("per_token", "per_sequence")
# Prefixes other loggers put in front of a trainer's own names: transformers' TensorBoard and
# trackio callbacks log `train/<key>`; a name is matched with and without them.
NAME_PREFIXES = ("", "train/")


class PresetError(ValueError):
    """A preset name or mapping file that cannot be used (message names the file/key)."""


@dataclass(frozen=True)
class Preset:
    """How one trainer's logged names map onto klwatch's series."""

    name: str  # machine name: trl_grpo, trl_ppo, …
    trainer: str  # for people: "TRL GRPOTrainer"
    # klwatch series → raw names to try, in order (each also tried with NAME_PREFIXES)
    series: Mapping[str, tuple[str, ...]]
    kl_units: str | None = "per_token"
    kl_estimator: str | None = None
    # raw names that identify this trainer (all of one group must be present)
    signatures: tuple[tuple[str, ...], ...] = ()
    # config keys (TrainingArguments / run config) that hold β when it is not logged
    beta_config_keys: tuple[str, ...] = ()
    # what the trainer never logs, said on the page instead of guessed
    notes: tuple[str, ...] = ()
    # a run of this trainer with β = 0 logs no KL at all (TRL GRPO skips it)
    kl_skipped_without_penalty: bool = False


def _same(*names: str) -> dict[str, tuple[str, ...]]:
    return {n: (n,) for n in names}


_VERL_COMMON = {
    "reward_mean": ("critic/score/mean",),
    "reward_total": ("critic/rewards/mean",),
    "entropy": ("actor/entropy",),
    "response_len": ("response_length/mean",),
    # verl 0.9.1: actor/* from the actor update (workers/engine_workers.py, core_algos.py),
    # response_length/* from trainer/ppo/metric_utils.py, training/rollout_* from
    # utils/debug/metrics.py (probabilities, not log-probabilities), rollout_corr/* from
    # trainer/ppo/rollout_corr_helper.py (only with algorithm.rollout_correction.rollout_is)
    "grad_norm": ("actor/grad_norm",),
    "truncated_frac": ("response_length/clip_ratio",),
    "clip_frac": ("actor/pg_clipfrac",),
    "approx_kl": ("actor/ppo_kl",),
    "loss": ("actor/pg_loss",),  # workers/utils/losses.py
    "rollout_prob_diff": ("training/rollout_probs_diff_mean",),
    "rollout_prob_diff_max": ("training/rollout_probs_diff_max",),
    "rollout_prob_corr": ("training/rollout_actor_probs_pearson_corr",),
    "rollout_is_ratio": ("rollout_corr/rollout_is_mean",),
    "rollout_is_ratio_min": ("rollout_corr/rollout_is_min",),
    "rollout_is_ratio_max": ("rollout_corr/rollout_is_max",),
}

# TRL 1.16 GRPOTrainer/RLOOTrainer `_metrics` (grpo_trainer.py, rloo_trainer.py); grad_norm
# from transformers' Trainer. sampling/* only with use_vllm and importance-sampling correction
# (GRPO only); clip_ratio/region_mean is 0 by design with num_iterations = 1.
_TRL_HEALTH = {
    "entropy": ("entropy",),
    "response_len": ("completions/mean_length",),
    "grad_norm": ("grad_norm",),
    "loss": ("loss",),
    "truncated_frac": ("completions/clipped_ratio",),
    "zero_std_frac": ("frac_reward_zero_std",),
    "reward_std": ("reward_std",),
    "clip_frac": ("clip_ratio/region_mean",),
    "rollout_logp_diff": ("sampling/sampling_logp_difference/mean",),
    "rollout_logp_diff_max": ("sampling/sampling_logp_difference/max",),
    "rollout_is_ratio": ("sampling/importance_sampling_ratio/mean",),
    "rollout_is_ratio_min": ("sampling/importance_sampling_ratio/min",),
    "rollout_is_ratio_max": ("sampling/importance_sampling_ratio/max",),
}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "klwatch",
            "klwatch RunWriter",
            # klwatch's trainer logs its PPO clip fraction as `clipfrac`
            {
                **_same(*KLWATCH_SERIES),
                "clip_frac": ("clip_frac", "clipfrac"),
                "loss": ("loss", "policy_loss"),
            },
            kl_units=None,  # run.json says
            signatures=(("kl_mean",),),
        ),
        Preset(
            "trl_grpo",
            "TRL GRPOTrainer",
            {"kl_mean": ("kl",), "reward_mean": ("reward",), **_TRL_HEALTH},
            kl_units="per_token",
            kl_estimator="k3",
            signatures=(
                ("reward", "completions/mean_length"),
                ("reward", "frac_reward_zero_std"),
                ("kl", "reward"),  # TRL's two core names alone: GRPO is TRL's default
            ),
            beta_config_keys=("beta",),
            notes=("TRL logs no max KL: spikes are judged on mean KL.",),
            kl_skipped_without_penalty=True,
        ),
        Preset(
            "trl_rloo",
            "TRL RLOOTrainer",
            {"kl_mean": ("kl",), "reward_mean": ("reward",), **_TRL_HEALTH},
            kl_units="per_token",
            kl_estimator="k1",
            signatures=(),  # same names as GRPO: chosen from the config, or by --preset
            beta_config_keys=("beta",),
            notes=(
                "TRL logs no max KL: spikes are judged on mean KL.",
                "RLOO's KL is the k1 estimator: single steps can be negative.",
            ),
            kl_skipped_without_penalty=True,
        ),
        Preset(
            "trl_ppo",
            "TRL PPOTrainer (trl.experimental.ppo, TRL ≤ 1.12)",
            {
                "kl_mean": ("objective/kl",),
                "reward_mean": ("objective/scores",),
                "reward_total": ("objective/rlhf_reward",),
                "entropy": ("policy/entropy_avg",),
            },
            kl_units="per_sequence",
            kl_estimator="k1",  # PPOConfig.kl_estimator default; "k3" when configured
            signatures=(("objective/kl", "objective/scores"),),
            beta_config_keys=("kl_coef",),
            notes=(
                "TRL PPO logs KL summed over each response (per sequence) and no response "
                "length: the per-token healthy band does not apply.",
                "TRL logs no max KL: spikes are judged on mean KL.",
            ),
        ),
        Preset(
            "openrlhf",
            "OpenRLHF PPO",
            {
                "kl_mean": ("kl",),
                "reward_mean": ("reward",),
                "reward_total": ("return",),
                # OpenRLHF (commit 3c3be62): trainer/ray/ppo_actor.py, trainer/ppo_trainer.py;
                # entropy only with --actor.entropy_coef set, vllm_kl only with
                # importance-sampling correction
                "response_len": ("response_length", "rollout/response_length_mean"),
                "entropy": ("entropy_loss",),
                "grad_norm": ("actor_grad_norm",),
                "truncated_frac": ("rollout/truncated_rate", "truncated"),
                "reward_std": ("rollout/reward_std",),
                "clip_frac": ("ppo_clip_ratio",),
                "approx_kl": ("ppo_kl",),
                "rollout_kl": ("vllm_kl",),
            },
            kl_units="per_token",
            kl_estimator="k1",  # --algo.kl.estimator default
            signatures=(("kl", "reward", "return"), ("reward", "return", "response_length")),
            notes=(
                "OpenRLHF logs no max KL and no β (--algo.kl.init_coef): spikes are judged on "
                "mean KL.",
            ),
        ),
        Preset(
            "verl",
            "verl (KL in the reward)",
            {
                "kl_mean": ("actor/reward_kl_penalty",),
                "beta": ("actor/reward_kl_penalty_coeff",),
                **_VERL_COMMON,
            },
            kl_units="per_token",
            kl_estimator="k1",  # algorithm.kl_penalty default "kl"
            signatures=(("actor/reward_kl_penalty",),),
            notes=("verl logs no max KL: spikes are judged on mean KL.",),
        ),
        Preset(
            "verl_kl_loss",
            "verl (KL as a loss term)",
            {"kl_mean": ("actor/kl_loss",), "beta": ("actor/kl_coef",), **_VERL_COMMON},
            kl_units="per_token",
            kl_estimator="k3",  # actor.kl_loss_type default low_var_kl
            # verl 0.7 logs actor/kl_loss = 0 even with the KL loss off: kl_coef says it is on
            signatures=(("actor/kl_loss", "actor/kl_coef"),),
            notes=("verl logs no max KL: spikes are judged on mean KL.",),
        ),
        Preset(
            "verl_no_kl",
            "verl (no KL term)",
            dict(_VERL_COMMON),
            kl_units="per_token",
            signatures=(("critic/score/mean",),),
            notes=(
                "verl logs KL only with algorithm.use_kl_in_reward or actor.use_kl_loss "
                "(both off by default).",
            ),
            kl_skipped_without_penalty=True,
        ),
    )
}


@dataclass(frozen=True)
class KLMeaning:
    """What a run's KL numbers mean: the one answer alerts, charts and the page share."""

    preset: str  # the preset in force ("" when none matched)
    trainer: str
    mapping: Mapping[str, str] = field(default_factory=dict)  # klwatch series → raw name
    units: str | None = None  # per_token | per_sequence | None (unknown)
    estimator: str | None = None
    beta: float | None = None  # constant β from the config, when β is not logged
    detected: bool = True  # False when forced by --preset / file / run.json
    notes: tuple[str, ...] = ()
    kl_skipped_without_penalty: bool = False

    @property
    def kl_found(self) -> bool:
        return "kl_mean" in self.mapping

    @property
    def kl_max_logged(self) -> bool:
        return "kl_max" in self.mapping

    @property
    def beta_logged(self) -> bool:
        return "beta" in self.mapping

    @property
    def beta_known(self) -> bool:
        return self.beta_logged or self.beta is not None

    @property
    def unit_label(self) -> str:
        return {"per_token": "per token", "per_sequence": "per sequence (summed over tokens)"}.get(
            self.units or "", "units unknown"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "trainer": self.trainer,
            "kl_units": self.units,
            "kl_estimator": self.estimator,
            "beta": self.beta,
            "mapping": dict(self.mapping),
        }


def resolve_names(preset: Preset, names: Iterable[str]) -> dict[str, str]:
    """klwatch series → the raw name this run logs for it (series not logged are absent)."""
    present = set(names)
    mapping: dict[str, str] = {}
    for series, candidates in preset.series.items():
        for candidate in candidates:
            hit = next((p + candidate for p in NAME_PREFIXES if p + candidate in present), None)
            if hit is not None:
                mapping[series] = hit
                break
    return mapping


def detect_preset(names: Iterable[str], config: Mapping[str, Any] | None = None) -> Preset | None:
    """The preset whose signature the logged names carry, or None.

    klwatch's own names win; otherwise the preset with the most mapped series among those
    whose signature matches. GRPO and RLOO log the same names: RLOO is told apart by its
    config (TrainingArguments JSON in the TensorBoard file or trackio) or chosen by --preset.
    """
    present = set(names)
    best: tuple[int, Preset] | None = None
    for preset in PRESETS.values():
        if not any(_has_all(present, group) for group in preset.signatures):
            continue
        if preset.name == "klwatch":
            return preset
        score = len(resolve_names(preset, present))
        if best is None or score > best[0]:
            best = (score, preset)
    if best is None:
        return None
    preset = best[1]
    if preset.name == "trl_grpo" and _looks_like_rloo(config or {}):
        return PRESETS["trl_rloo"]
    return preset


def _has_all(present: set[str], group: tuple[str, ...]) -> bool:
    return all(any(p + name in present for p in NAME_PREFIXES) for name in group)


def _looks_like_rloo(config: Mapping[str, Any]) -> bool:
    """TRL's RLOOConfig has fields GRPOConfig lacks (checked in TRL 1.16's configs)."""
    hint = str(config.get("_trainer_class") or config.get("trainer") or "")
    if "RLOO" in hint:
        return True
    return "reward_clip_range" in config and "loss_type" not in config


def meaning_for(
    names: Iterable[str],
    info: Mapping[str, Any],
    forced: Preset | None = None,
) -> KLMeaning:
    """Decide what a run's series are and what its KL means.

    Precedence: `forced` (--preset / mapping file) > run.json `preset` > detection from the
    names. Units and estimator: run.json's `kl` section wins over the preset (klwatch runs say
    it themselves).
    """
    names = list(names)
    config_info = info.get("config")
    config = config_info if isinstance(config_info, Mapping) else {}
    detected = False
    preset = forced
    if preset is None and info.get("preset") is not None:
        preset = preset_from_spec(info["preset"], "run.json")
    if preset is None:
        preset = detect_preset(names, config)
        detected = True
    if preset is None:
        return KLMeaning("", "unknown trainer", detected=True)
    mapping = resolve_names(preset, names)
    kl_info = info.get("kl")
    kl = kl_info if isinstance(kl_info, Mapping) else {}
    units = kl.get("units") if kl.get("units") in KL_UNITS else preset.kl_units
    notes = preset.notes
    if units is None and preset.name == "klwatch":
        # The contract's default: a run that does not say (no run.json) logs per-token KL.
        units = "per_token"
        notes = (*notes, "KL units not stated (no run.json kl.units): read as per token.")
    estimator = kl.get("estimator") if isinstance(kl.get("estimator"), str) else None
    beta = None
    if "beta" not in mapping:
        beta = _finite(kl.get("beta"))
        for key in preset.beta_config_keys:
            if beta is None:
                beta = _finite(config.get(key))
    return KLMeaning(
        preset=preset.name,
        trainer=preset.trainer,
        mapping=mapping,
        units=units,
        estimator=estimator or preset.kl_estimator,
        beta=beta,
        detected=detected,
        notes=notes,
        kl_skipped_without_penalty=preset.kl_skipped_without_penalty,
    )


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# -- choosing a preset by hand ----------------------------------------------------------------


def preset_from_spec(spec: object, where: str) -> Preset:
    """A preset from a name (`trl_ppo`), a TOML file path, or a mapping table (run.json).

    A mapping table looks like the TOML file:
        base = "trl_grpo"            # optional: start from a built-in preset
        kl_units = "per_sequence"    # optional
        kl_estimator = "k3"          # optional
        [series]                     # klwatch series = raw name (or list of names to try)
        kl_mean = "my/kl"
    """
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec]
        path = Path(spec)
        if path.suffix == ".toml" or path.exists():
            return load_preset_file(path)
        raise PresetError(f"{where}: unknown preset {spec!r} (known: {', '.join(PRESETS)})")
    if isinstance(spec, Mapping):
        return preset_from_table(spec, where)
    raise PresetError(f"{where}: 'preset' must be a preset name or a table, got {spec!r}")


def load_preset_file(path: str | Path) -> Preset:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError as e:
        raise PresetError(f"{path}: no such preset file") from e
    except OSError as e:
        raise PresetError(f"{path}: cannot read ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{path}: not valid TOML ({e})") from e
    return preset_from_table(table, str(path))


def preset_from_table(table: Mapping[str, Any], where: str) -> Preset:
    allowed = {"base", "name", "trainer", "kl_units", "kl_estimator", "series", "beta_config_key"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PresetError(f"{where}: unknown preset key(s) {unknown} (allowed: {sorted(allowed)})")
    base_name = table.get("base")
    if base_name is not None and base_name not in PRESETS:
        raise PresetError(f"{where}: base = {base_name!r} is not a preset ({', '.join(PRESETS)})")
    base = PRESETS[base_name] if base_name else Preset("custom", "custom mapping", {})
    series = dict(base.series)
    raw_series = table.get("series", {})
    if not isinstance(raw_series, Mapping):
        raise PresetError(f"{where}: [series] must be a table of series = raw name")
    for key, value in raw_series.items():
        if key not in KLWATCH_SERIES:
            raise PresetError(
                f"{where}: series.{key} is not a klwatch series ({', '.join(KLWATCH_SERIES)})"
            )
        names = (value,) if isinstance(value, str) else value
        valid = isinstance(names, list | tuple) and all(isinstance(n, str) for n in names)
        if not (valid and names):
            raise PresetError(f"{where}: series.{key} must be a name or a list of names")
        series[key] = tuple(names)
    units = table.get("kl_units", base.kl_units)
    if units is not None and units not in KL_UNITS:
        raise PresetError(f"{where}: kl_units must be one of {KL_UNITS}, got {units!r}")
    beta_keys = table.get("beta_config_key")
    return replace(
        base,
        name=str(table.get("name", base.name if base_name else "custom")),
        trainer=str(table.get("trainer", base.trainer)),
        series=series,
        kl_units=units,
        kl_estimator=table.get("kl_estimator", base.kl_estimator),
        beta_config_keys=(beta_keys,) if isinstance(beta_keys, str) else base.beta_config_keys,
    )
