"""What one run's KL is judged against: the band, the growth level, β's bounds, the units.

The numbers come from monitor/alerts/config.py (defaults, a rules file, run.json's `alerts`); this
module turns them into one run's `Thresholds` from its metadata and what its KL means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.alerts.config import AlertConfig, BandConfig
from monitor.presets import KLMeaning


@dataclass(frozen=True)
class Thresholds:
    """What one run's numbers are compared with, resolved from config + run.json."""

    low: float  # band, in the units of `kl` below
    high: float
    growth_level: float  # kl_growth / reward_hacking only count above this
    target: float | None
    per_token_scaled: bool  # per-sequence KL divided by response length row by row
    unit: str  # for messages
    beta_bounds: tuple[float, float] | None  # when the controller clamps β
    band_off: str | None = None  # why the band rules cannot judge this run (said on the page)
    # completions per prompt group, when the config says (TRL num_generations, verl
    # rollout.n): with 1, every group has zero reward spread by construction
    group_size: int | None = None


def resolve_thresholds(
    config: AlertConfig, info: Mapping[str, Any], meaning: KLMeaning | None = None
) -> Thresholds:
    """What this run's KL is compared with. Units come from `meaning` (monitor.presets, the
    one owner of what a run's KL means) when given, else from run.json's `kl.units`."""
    kl, run_config = _section(info, "kl"), _section(info, "config")
    target = _positive(kl.get("target"))
    units = meaning.units if meaning is not None and meaning.units else kl.get("units")
    per_sequence = units == "per_sequence"
    band = config.band
    band_off = None
    if target is not None:
        low, high = band.target_low * target, band.target_high * target
        growth_level = config.kl_growth.over_target * target
        unit = " (per sequence)" if per_sequence else " per token"
    else:
        low, high, growth_level = band.low, band.high, band.high
        unit = " per token (per-sequence KL ÷ response length)" if per_sequence else " per token"
        if per_sequence and meaning is not None and band.length_column not in meaning.mapping:
            # A per-token band on a per-sequence sum is off by the response length, which
            # this run does not log: judge no level rather than guess one.
            band_off = (
                "KL is a per-sequence sum and no response length is logged to convert it: "
                "the per-token healthy band (kl_high, kl_low) is off for this run"
            )
            low, high, growth_level, unit = math.nan, math.nan, 0.0, " per sequence"
    controller = kl.get("controller") or run_config.get("kl_controller")
    sat = config.beta_saturated
    bounds = None
    if controller in sat.controllers:
        lo = _positive(run_config.get("beta_min", run_config.get("kl_beta_min"))) or sat.beta_min
        hi = _positive(run_config.get("beta_max", run_config.get("kl_beta_max"))) or sat.beta_max
        bounds = (lo, hi)
    scaled = per_sequence and target is None and band_off is None
    return Thresholds(
        low, high, growth_level, target, scaled, unit, bounds, band_off, _group_size(run_config)
    )


# Config keys that hold the number of completions sampled per prompt: TRL 1.16's GRPOConfig /
# RLOOConfig (which reject 1 for training), OpenRLHF's --n_samples_per_prompt; a RunWriter
# user may pass either.
GROUP_SIZE_KEYS = ("num_generations", "n_samples_per_prompt")


def _group_size(run_config: Mapping[str, Any]) -> int | None:
    for key in GROUP_SIZE_KEYS:
        value = run_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def per_token_divisor(th: Thresholds, band: BandConfig, length: np.ndarray) -> np.ndarray:
    """What each row's KL is divided by before it meets the band: its response length for
    per-sequence KL (`band.typical_response_len` where none is logged), else 1."""
    if not th.per_token_scaled:
        return np.ones(length.size)
    ok = np.isfinite(length) & (length > 0)
    return np.where(ok, length, band.typical_response_len)


def _section(info: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = info.get(key)
    return value if isinstance(value, Mapping) else {}


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None
