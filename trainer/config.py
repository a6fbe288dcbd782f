"""The one training config: every hyperparameter explicit (cleanRL style).

Precedence: dataclass defaults < `--config FILE` (TOML or JSON, keys = field names) < CLI
flags. On `--resume` the run's saved config replaces the defaults, so a resumed run keeps its
settings unless a flag or file overrides them (e.g. `--steps` to train longer).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
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


@dataclass
class TrainConfig:
    # -- run -------------------------------------------------------------------------------
    run_dir: str = ""  # "" -> runs/<timestamp>-<controller>
    steps: int = 1000  # total PPO steps (a resumed run continues up to this number)
    seed: int = 0
    device: str = "auto"  # auto: cuda (bf16 autocast) when available, else cpu
    # Relative paths resolve against the working directory, then the repository root, so a
    # run.json never records one machine's absolute checkout path.
    pretrained: str = "trainer/assets/policy.pt"
    # -- your own model: a local Hugging Face directory, never downloaded (docs/trainer.md) --
    model: str = ""  # causal-LM directory; "" -> the shipped grammar LM (`pretrained`)
    lora: bool = False  # train LoRA adapters; the reference = the same weights, adapters off
    lora_r: int = 16
    lora_alpha: int = 32  # LoRA scale = lora_alpha / lora_r
    model_dtype: str = "float32"  # weights as loaded (bfloat16 halves a LoRA base's memory)
    gradient_checkpointing: bool = False  # recompute activations in the update (CUDA memory)
    reward_model: str = ""  # sequence-classification directory; "" -> `reward` (built in)
    reward_label: str = ""  # its label (name or index) to score; "" -> its single logit
    prompts: str = ""  # JSONL ("prompt" field) / Parquet / text file; "" -> grammar prompts
    max_prompt_tokens: int = 128  # longer prompts keep their last tokens
    # -- reward & KL penalty ---------------------------------------------------------------
    reward: str = "exclaim"
    kl_controller: str = "adaptive"
    kl_coef: float = 0.1  # initial β (the seed's "usually around 0.1")
    target_kl: float = 0.05  # per-token mean KL the adaptive/proportional controllers aim at
    kl_estimator: str = "k1"  # feeds the penalty and kl_mean/kl_max; all four are logged
    kl_units: str = "per_token"  # kl_mean is a per-token mean (not a per-sequence sum)
    kl_horizon: float = 10000.0  # proportional controller (Ziegler 2019)
    adaptive_factor: float = 1.5  # adaptive controller (the seed's thermostat)
    beta_min: float = 0.01
    beta_max: float = 1.0
    # -- rollout ---------------------------------------------------------------------------
    batch_size: int = 64  # prompts per step per process
    prompt_words: int = 2  # prompt = <bos> + the first words of a grammar sentence
    max_new_tokens: int = 20
    # Sampling. log π is scored at the same temperature; top-k/top-p truncation samples from
    # another distribution than the one scored, which biases every KL estimate: off.
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    # -- PPO -------------------------------------------------------------------------------
    lr: float = 5e-6  # small: the no-penalty run should drift over hundreds of steps
    ppo_epochs: int = 4
    num_minibatches: int = 4
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.5
    entropy_coef: float = 0.0  # an entropy bonus would fight the KL penalty; off
    gamma: float = 1.0
    gae_lambda: float = 0.95
    max_grad_norm: float = 1.0
    micro_batch_size: int = 0  # sequences per forward/backward (gradient accumulation); 0: all
    # -- bookkeeping -----------------------------------------------------------------------
    checkpoint_every: int = 100
    samples_every: int = 20
    num_samples: int = 4
    torch_threads: int = 0  # 0: torch's default
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in run.json

    def validate(self) -> None:
        choices = {
            "kl_controller": CONTROLLERS,
            "kl_estimator": ESTIMATORS,
            "reward": REWARDS,
            "device": DEVICES,
            "kl_units": ("per_token",),
            "model_dtype": MODEL_DTYPES,
        }
        for name, allowed in choices.items():
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


FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def coerce(name: str, value: Any) -> Any:
    """Check one override against the field's type; ints are accepted for floats."""
    if name not in FIELD_TYPES:
        raise ConfigError(f"unknown config key {name!r}")
    kind = {"int": int, "float": float, "str": str, "bool": bool, "dict[str, Any]": dict}[
        str(FIELD_TYPES[name])
    ]
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
