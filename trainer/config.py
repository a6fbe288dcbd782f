"""The one training config: every hyperparameter explicit (cleanRL style).

Precedence: dataclass defaults < `--config FILE` (TOML or JSON, keys = field names) < CLI
flags. On `--resume` the run's saved config replaces the defaults, so a resumed run keeps its
settings unless a flag or file overrides them (e.g. `--steps` to train longer). Each field
carries its help text and allowed values (`setting`); `python -m trainer` makes its flags from them.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.controllers import CONTROLLERS
from trainer.kl import ESTIMATORS
from trainer.rewards import REWARDS

ASSETS = Path(__file__).resolve().parent / "assets"
DEVICES = ("auto", "cpu", "cuda")
MODEL_DTYPES = ("float32", "bfloat16")
# Settings that only mean something for a Hugging Face model (`model`), with their defaults.
HF_ONLY = {
    "lora": False,
    "reward_model": "",
    "reward_label": "",
    "prompts": "",
    "gradient_checkpointing": False,
    "model_dtype": "float32",
}


def resolve_pretrained(path: str) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return ASSETS.parents[1] / candidate


class ConfigError(ValueError):
    """A config value or file that cannot be used; the CLI turns it into exit code 2."""


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    no_flag: str = "",
) -> Any:
    """A TrainConfig field with what `python -m trainer` needs to make it a flag: its help
    text, its allowed values (`validate` checks the same tuple) and, for a field that is no
    flag, the reason why. `config_flags` in trainer/__main__.py
    generates the flags from these."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if no_flag:
        metadata["no_flag"] = no_flag
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # -- run -------------------------------------------------------------------------------
    run_dir: str = setting("", 'run directory; "" -> runs/<timestamp>-<controller>')
    steps: int = setting(1000, "total PPO steps (a resumed run continues up to this number)")
    seed: int = setting(0, "random seed")
    device: str = setting(
        "auto", "auto: cuda when available (bf16 autocast), else cpu", choices=DEVICES
    )
    # Relative (see resolve_pretrained), so a run.json never records one machine's checkout.
    pretrained: str = setting(
        "trainer/assets/policy.pt",
        "the grammar LM's weights (without --model); a relative path is looked up in the "
        "working directory, then the repository root",
    )
    # -- your own model: a local Hugging Face directory, never downloaded (docs/trainer.md) --
    model: str = setting(
        "", 'local Hugging Face causal-LM directory; "" -> the shipped grammar LM (--pretrained)'
    )
    lora: bool = setting(
        False, "train LoRA adapters (peft); the reference = the same weights, adapters off"
    )
    lora_r: int = setting(16, "LoRA rank (with --lora)")
    lora_alpha: int = setting(32, "LoRA scale = lora_alpha / lora_r (with --lora)")
    model_dtype: str = setting(
        "float32",
        "dtype the --model weights are loaded in (bfloat16 halves a LoRA base's memory)",
        choices=MODEL_DTYPES,
    )
    gradient_checkpointing: bool = setting(
        False, "recompute activations in the update (CUDA memory; with --model)"
    )
    reward_model: str = setting(
        "", 'local sequence-classification model directory as reward; "" -> --reward (built in)'
    )
    reward_label: str = setting("", 'its label (name or index) to score; "" -> its single logit')
    prompts: str = setting(
        "", 'JSONL (field "prompt") / Parquet / text file of prompts; "" -> grammar prompts'
    )
    max_prompt_tokens: int = setting(128, "longer prompts keep their last tokens")
    # -- reward & KL penalty ---------------------------------------------------------------
    reward: str = setting(
        "exclaim", "built-in reward (see --reward-model for your own)", choices=REWARDS
    )
    kl_controller: str = setting("adaptive", "how β is chosen each step", choices=CONTROLLERS)
    kl_coef: float = setting(0.1, "initial β (the β of --kl-controller fixed)")
    target_kl: float = setting(
        0.05, "per-token mean KL the adaptive/proportional controllers aim at"
    )
    kl_estimator: str = setting(
        "k1",
        "per-token KL estimate that feeds the penalty and kl_mean/kl_max (all four are logged)",
        choices=ESTIMATORS,
    )
    kl_units: str = setting(
        "per_token",
        "kl_mean is a per-token mean (not a per-sequence sum)",
        choices=("per_token",),
        no_flag="one value today; a field so that run.json records what kl_mean means",
    )
    kl_horizon: float = setting(10000.0, "horizon of the proportional controller (Ziegler 2019)")
    adaptive_factor: float = setting(1.5, "adaptive controller: β × or ÷ this factor")
    beta_min: float = setting(0.01, "adaptive controller: lower bound of β")
    beta_max: float = setting(1.0, "adaptive controller: upper bound of β")
    # -- rollout ---------------------------------------------------------------------------
    batch_size: int = setting(64, "prompts per step per process")
    prompt_words: int = setting(2, "grammar prompts: <bos> + the first words of a grammar sentence")
    max_new_tokens: int = setting(20, "response length limit")
    # Sampling. log π is scored at the same temperature; top-k/top-p truncation samples from
    # another distribution than the one scored, which biases every KL estimate: off.
    temperature: float = setting(1.0, "sampling temperature (log π is scored at it too)")
    top_p: float = setting(1.0, "nucleus sampling (1: off; truncation biases the KL)")
    top_k: int = setting(0, "top-k sampling (0: off; truncation biases the KL)")
    # -- PPO -------------------------------------------------------------------------------
    lr: float = setting(
        5e-6, "Adam learning rate (small: the no-penalty run should drift over hundreds of steps)"
    )
    ppo_epochs: int = setting(4, "PPO epochs over each step's batch")
    num_minibatches: int = setting(4, "minibatches per PPO epoch")
    clip_range: float = setting(0.2, "PPO's clip range ε of the policy ratio")
    clip_range_value: float = setting(0.2, "clip range of the value update")
    vf_coef: float = setting(0.5, "value loss coefficient")
    entropy_coef: float = setting(0.0, "entropy bonus (0: off; it would fight the KL penalty)")
    gamma: float = setting(1.0, "discount γ")
    gae_lambda: float = setting(0.95, "GAE λ")
    max_grad_norm: float = setting(1.0, "gradient norm clipping")
    micro_batch_size: int = setting(
        0, "sequences per forward/backward (gradient accumulation; 0: all)"
    )
    # -- bookkeeping -----------------------------------------------------------------------
    checkpoint_every: int = setting(100, "steps between checkpoints (and one at the end)")
    samples_every: int = setting(20, "steps between decoded samples in samples.jsonl")
    num_samples: int = setting(4, "decoded samples written every samples_every steps")
    torch_threads: int = setting(0, "torch CPU threads (0: torch's default)")
    extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "free-form notes kept in run.json",
            "no_flag": "a table of free-form notes: set it in a --config file",
        },
    )

    def validate(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = (
            "steps",
            "batch_size",
            "max_new_tokens",
            "ppo_epochs",
            "num_minibatches",
            "checkpoint_every",
            "samples_every",
            "target_kl",
            "lr",
            "kl_horizon",
            "adaptive_factor",
            "beta_min",
            "prompt_words",
            "temperature",
            "top_p",
            "lora_r",
            "lora_alpha",
            "max_prompt_tokens",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        nonneg = (
            "kl_coef",
            "clip_range",
            "clip_range_value",
            "vf_coef",
            "entropy_coef",
            "max_grad_norm",
            "num_samples",
            "torch_threads",
            "seed",
            "top_k",
            "micro_batch_size",
        )
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.beta_min > self.beta_max:
            raise ConfigError(f"beta_min {self.beta_min} exceeds beta_max {self.beta_max}")
        if self.num_minibatches > self.batch_size:
            raise ConfigError("num_minibatches cannot exceed batch_size")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError("gamma and gae_lambda must lie in [0, 1]")
        if self.top_p > 1:
            raise ConfigError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not self.model:
            for name, default in HF_ONLY.items():
                if getattr(self, name) != default:
                    raise ConfigError(f"{name} needs a Hugging Face model (--model PATH)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Each field's type as a class (int, float, str, bool, dict), from its annotation.
FIELD_TYPES: dict[str, type] = {
    name: typing.get_origin(hint) or hint
    for name, hint in typing.get_type_hints(TrainConfig).items()
}
# The allowed values of each field that has a fixed set: `validate` and the CLI's choices.
CHOICES: dict[str, tuple[str, ...]] = {
    name: f.metadata["choices"] for name, f in FIELDS.items() if "choices" in f.metadata
}


def coerce(name: str, value: Any) -> Any:
    """Check one override against the field's type; ints are accepted for floats."""
    if name not in FIELD_TYPES:
        raise ConfigError(f"unknown config key {name!r}")
    kind = FIELD_TYPES[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name!r} must be true or false, got {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"config key {name!r} must be {kind.__name__}, got {value!r}")
    return value


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of settings")
    return {k.replace("-", "_"): coerce(k.replace("-", "_"), v) for k, v in data.items()}


def build_config(base: dict[str, Any], *overrides: dict[str, Any]) -> TrainConfig:
    merged = dict(base)
    for layer in overrides:
        merged.update({k: coerce(k, v) for k, v in layer.items()})
    cfg = TrainConfig(**{k: coerce(k, v) for k, v in merged.items()})
    cfg.validate()
    return cfg
