"""Alert thresholds: the one place they live (docs/alerts.md explains each and why).

Defaults are the dataclass defaults below. A TOML file (`check --rules FILE`) and then the
`alerts` section of a run's run.json override them, section by section, e.g.

    block_rows = 50
    [kl_high]
    sustain_rows = 400
    [band]
    high = 0.2

An unknown section or key is an error that names the key and the file it came from.
Windows are given in rows (records) and rounded up to whole blocks of `block_rows`.
The `[notify]` table of a rules file belongs to monitor/notify.py (`watch --notify`), which
reads and checks it; the thresholds loader leaves it alone.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.run import STALL_FACTOR, STALL_MIN_SECONDS

SEVERITIES = ("info", "warning", "critical")
RULE_IDS = (
    "kl_spike",
    "kl_growth",
    "kl_high",
    "kl_low",
    "kl_negative",
    "kl_nonfinite",
    "beta_saturated",
    "run_stalled",
    "reward_hacking",
    "no_kl_penalty",
    "kl_missing",
    "entropy_collapse",
    "no_learning_signal",
    "completions_truncated",
    "grad_spike",
    "rollout_mismatch",
    "metric_nonfinite",
    "records_unreadable",
    "alert_config_invalid",
)
# Tables of a rules file read by other modules: [notify] by monitor/notify.py.
HANDED_OVER = ("notify",)


class RulesError(ValueError):
    """A thresholds file or run.json `alerts` section that cannot be used (names key + file)."""


@dataclass(frozen=True)
class BandConfig:
    """The healthy range of mean KL (seed: 0.01–0.1 per token)."""

    low: float = 0.01  # per-token mean KL; below: β too strong, nothing learned
    high: float = 0.1  # above: drifting too far, reward-hacking risk
    # With target_kl in run.json the band is [target_low, target_high] × target instead.
    target_low: float = 0.25
    target_high: float = 2.0
    # per_sequence KL (TRL) is divided by this column row by row to compare with the band…
    length_column: str = "response_len"
    # …or by this when the column is absent.
    typical_response_len: float = 128.0


@dataclass(frozen=True)
class SpikeConfig:
    enabled: bool = True
    severity: str = "warning"
    metrics: tuple[str, ...] = ("kl_max", "kl_mean")
    window_rows: int = 250  # robust reference: median/MAD of log KL over these rows
    min_reference_rows: int = 100  # no verdicts before this much history
    z: float = 6.0  # robust z-score (MAD×1.4826 as σ) on the log scale
    min_ratio: float = 4.0  # …and at least this many times the reference median
    min_value: float = 0.01  # per-token: jumps among tiny values early on are not spikes
    # …and a jump: ≥ min_jump × the median of the recent_rows rows just before (0: off). A
    # steep climb (0.05 → 0.6 over 150 steps) is kl_high's / kl_growth's, not a spike.
    recent_rows: int = 10
    min_jump: float = 3.0
    clear_rows: int = 10  # quiet rows that end an episode (bursts count once)


@dataclass(frozen=True)
class GrowthConfig:
    """kl_growth: mean KL climbing without levelling off, above the band (docs/alerts.md).

    Judged at every block on the trailing windows of min_window_rows, 2×, 4×, … up to
    max_window_rows rows (each judged on its own: a run is judged by the windows it has rows
    for, whatever its length). A window's evidence is the medians of `point_rows`-row slices.
    """

    enabled: bool = True
    severity: str = "critical"
    min_window_rows: int = 150
    max_window_rows: int = 1200
    point_rows: int = 10  # medians of this many rows: one spike moves none of them much
    # A window fires when all of these hold:
    # 1. level: its last block above the band (or target × over_target), every block above
    #    floor_fraction × that level;
    over_target: float = 1.2
    floor_fraction: float = 0.5
    # 2. rising: Mann–Kendall z of its medians ≥ z_trend (3.5: p ≈ 2e-4), and of each half
    #    ≥ z_half (halves of 2 shortest windows or more: ≥ z_half_long);
    z_trend: float = 3.5
    z_half: float = 1.9
    z_half_long: float = 2.7
    # 3. not levelling off: the second half's slope (KL units) − min_slope_ratio × the
    #    first's ≥ z_steady standard errors (linear growth: ratio 1, exponential > 1, a
    #    plateau approach with time constant τ over W rows: e^(−W/2τ));
    min_slope_ratio: float = 0.6
    z_steady: float = 1.0
    # 4. the level moved: second half's level − first's ≥ min_level_rise × the first half's
    #    slope carried on (each half of an oscillation can tilt up at the same height);
    min_level_rise: float = 0.5
    # 5. a new high: the latest min_window_rows above every such stretch of the lookback_rows
    #    before them by new_high_z standard errors (a bounded oscillation returns to old highs);
    lookback_rows: int = 1200
    new_high_z: float = 0.5
    # 6. the window half its length ends still climbing: its own halves not levelling off
    #    (as in 3, but only refuted when slope_b − min_slope_ratio × slope_a is below zero by
    #    more than z_still_steady standard errors), or its second half rising by z_still_rising.
    z_still_steady: float = 1.0
    z_still_rising: float = 2.4
    # An alert starts where one window fired at verdicts in a row (one per block) spanning
    # sustain_rows with it, and at least twice (150-row window: 4 verdicts): a rise that
    # levels off within 150 rows fires a 150-row window at most 3 times in a row.
    sustain_rows: int = 300
    # It holds while a window's second half still rises (z ≥ z_hold, slope ≥
    # hold_slope_ratio × the first half's) with the last block above the level; it clears
    # after clear_rows without.
    z_hold: float = 2.0
    hold_slope_ratio: float = 0.3
    clear_rows: int = 200

    def points_per_block(self, block_rows: int) -> int:
        """How many point medians each block of `block_rows` rows gives."""
        return max(1, block_rows // max(1, self.point_rows))

    def window_rows(self) -> list[int]:
        """min_window_rows doubled up to max_window_rows (at least the first)."""
        rows = max(1, self.min_window_rows)
        out: list[int] = []
        while not out or rows <= self.max_window_rows:
            out.append(rows)
            rows *= 2
        return out


@dataclass(frozen=True)
class LevelConfig:
    """kl_high / kl_low: evidence that mean KL is outside the band, accumulated row by row
    (a CUSUM of log(level / edge) − margin, monitor/alerts/evidence.py): the further out,
    the sooner. Defaults: 5× the edge is flagged in ~30 rows, 2× in ~75, 1.5× in ~150;
    within margin of the edge never."""

    enabled: bool = True
    severity: str = "warning"
    margin: float = 0.1  # log units: levels within e^0.1 ≈ 1.1× of the edge gather nothing
    evidence: float = 45.0  # the sum that raises the alert
    clear_evidence: float = 20.0  # sum of log(edge / level) that clears it (0.5× in ~30 rows)
    max_log_step: float = 3.0  # one row counts at most log 20: a spike is not a stretch
    warmup_steps: int = 0  # rows with step below this are never judged


@dataclass(frozen=True)
class NegativeConfig:
    enabled: bool = True
    severity: str = "warning"
    t: float = 3.0  # block mean below zero by this many standard errors
    sustain_rows: int = 200
    clear_rows: int = 200


@dataclass(frozen=True)
class NonfiniteConfig:
    enabled: bool = True
    severity: str = "critical"
    metrics: tuple[str, ...] = ("kl_mean", "kl_max")
    clear_rows: int = 10


@dataclass(frozen=True)
class BetaSaturatedConfig:
    enabled: bool = True
    severity: str = "warning"
    # Bounds when run.json's config names none (trainer.controllers.AdaptiveKL defaults).
    beta_min: float = 0.01
    beta_max: float = 1.0
    relative_tolerance: float = 1e-3  # "at the bound"
    off_target_ratio: float = 1.5  # KL above target × this (or below target ÷ this)
    controllers: tuple[str, ...] = ("adaptive",)  # controllers that clamp β
    sustain_rows: int = 200
    clear_rows: int = 200


@dataclass(frozen=True)
class StallConfig:
    enabled: bool = True
    severity: str = "warning"
    factor: float = STALL_FACTOR  # silent for this many usual step intervals…
    min_seconds: float = STALL_MIN_SECONDS  # …and at least this long


@dataclass(frozen=True)
class RewardHackingConfig:
    enabled: bool = True
    severity: str = "warning"
    segment_rows: int = 250  # compare the last segment with the one before
    min_kl_rise: float = 0.1  # KL grew by at least 10 % …
    min_reward_rise: float = 0.02  # …while reward rose by at least 2 % (of |reward|) …
    kl_vs_reward: float = 2.0  # …and KL's relative rise is this many times reward's
    sustain_rows: int = 100
    clear_rows: int = 250


@dataclass(frozen=True)
class RunFactConfig:
    """A rule about the run as a whole (no KL penalty, no KL series): on or off, severity."""

    enabled: bool = True
    severity: str = "warning"


@dataclass(frozen=True)
class EntropyCollapseConfig:
    """entropy_collapse: entropy far below its own early level, on accumulated evidence."""

    enabled: bool = True
    severity: str = "warning"
    metric: str = "entropy"
    reference_rows: int = 50  # the early level: median of the first rows with a value (20 let
    # σ = 0.5 noise move it ±15 %: a miss and false alarms at 0.45× in the quality bench)
    fraction: float = 0.4  # limit = this × the early level (a healthy sharpening: ~0.6)
    margin: float = 0.05  # log units below the limit before a row counts
    evidence: float = 10.0  # 0.3× the early level in ~40 rows, 0.2× in ~15
    clear_evidence: float = 10.0
    max_log_step: float = 3.0


@dataclass(frozen=True)
class NoLearningSignalConfig:
    """no_learning_signal: prompt groups without reward spread, or a gradient of exactly 0.

    The share of groups with zero reward std is judged as a Bernoulli rate: each row adds the
    log-likelihood ratio of `dead_share` against `normal_share` (break-even ≈ 0.88); all
    groups without spread flags in ~50 rows, 30-60 % (hard tasks) never.
    """

    enabled: bool = True
    severity: str = "warning"
    normal_share: float = 0.7  # the most zero-spread groups a learning run usually has
    dead_share: float = 0.97  # what a run that learns nothing shows
    evidence: float = 16.0
    zero_grad_rows: int = 20  # a gradient norm of exactly 0 for this many rows in a row


@dataclass(frozen=True)
class TruncationConfig:
    """completions_truncated: the share of completions that hit the length limit, judged as a
    Bernoulli rate (break-even 0.5): all truncated flags in ~15 rows, 0.6 in ~75."""

    enabled: bool = True
    severity: str = "warning"
    normal_share: float = 0.3
    truncated_share: float = 0.7
    evidence: float = 12.0


@dataclass(frozen=True)
class GradSpikeConfig:
    """grad_spike: the gradient norm far above its recent robust level (like kl_spike)."""

    enabled: bool = True
    severity: str = "warning"
    metrics: tuple[str, ...] = ("grad_norm",)
    window_rows: int = 250
    min_reference_rows: int = 50  # GRPO runs are short: judge from row 50
    z: float = 5.0  # robust z on the log scale (z 6 caught 12/20 single 20× spikes at σ 0.5)
    min_ratio: float = 5.0
    min_value: float = 0.0  # any scale: gradient norms depend on the model
    # …and a jump: at least min_jump × the median of the recent_rows rows just before it. A
    # gradient norm that climbs 5× over tens of steps (a collapsing run) is a level, not a spike.
    recent_rows: int = 10
    min_jump: float = 3.0
    clear_rows: int = 10


@dataclass(frozen=True)
class RolloutMismatchConfig:
    """rollout_mismatch: the rollout engine (vLLM, SGLang) and the trainer disagree about the
    policy's probabilities. Each series present adds its evidence; the strongest row counts."""

    enabled: bool = True
    severity: str = "warning"
    # verl FAQ: training/rollout_probs_diff_mean below 0.005 is healthy, above 0.01 points to
    # a precision problem.
    prob_diff_limit: float = 0.01
    # TRL: mean |Δ log p| per token between vLLM and the trainer; 0.05 is ~5 % per token.
    logp_diff_limit: float = 0.05
    # TRL: the mean importance-sampling ratio π_trainer / π_vLLM away from 1 by more than this
    # factor (either side)
    is_ratio_limit: float = 1.1
    # either difference grown to this many times its own early level (first reference_rows)
    growth_factor: float = 4.0
    reference_rows: int = 20
    margin: float = 0.1
    evidence: float = 20.0  # 2× a limit in ~35 rows, 5× in ~15
    clear_evidence: float = 20.0
    max_log_step: float = 3.0


@dataclass(frozen=True)
class UnreadableConfig:
    """records_unreadable: klwatch cannot see the run (never green while blind)."""

    enabled: bool = True
    severity: str = "warning"
    # more than this share of the newest 100 lines damaged (monitor.run.RECENT_LINES)
    damaged_share: float = 0.5


@dataclass(frozen=True)
class AlertConfig:
    """Every threshold of every rule. Override with `AlertConfig().merged(mapping, source)`."""

    block_rows: int = 50  # level rules judge medians of aligned blocks of this many rows
    band: BandConfig = field(default_factory=BandConfig)
    kl_spike: SpikeConfig = field(default_factory=SpikeConfig)
    kl_growth: GrowthConfig = field(default_factory=GrowthConfig)
    kl_high: LevelConfig = field(default_factory=LevelConfig)
    kl_low: LevelConfig = field(
        # Twice the evidence of kl_high: a slow warm-up that reaches the band by step ~300 is
        # not flagged; KL stuck at 0.6× the band's bottom (β too strong) is, by step ~370.
        default_factory=lambda: LevelConfig(severity="info", evidence=90.0, warmup_steps=150)
    )
    kl_negative: NegativeConfig = field(default_factory=NegativeConfig)
    kl_nonfinite: NonfiniteConfig = field(default_factory=NonfiniteConfig)
    beta_saturated: BetaSaturatedConfig = field(default_factory=BetaSaturatedConfig)
    run_stalled: StallConfig = field(default_factory=StallConfig)
    reward_hacking: RewardHackingConfig = field(default_factory=RewardHackingConfig)
    no_kl_penalty: RunFactConfig = field(default_factory=RunFactConfig)
    kl_missing: RunFactConfig = field(default_factory=RunFactConfig)
    entropy_collapse: EntropyCollapseConfig = field(default_factory=EntropyCollapseConfig)
    no_learning_signal: NoLearningSignalConfig = field(default_factory=NoLearningSignalConfig)
    completions_truncated: TruncationConfig = field(default_factory=TruncationConfig)
    grad_spike: GradSpikeConfig = field(default_factory=GradSpikeConfig)
    rollout_mismatch: RolloutMismatchConfig = field(default_factory=RolloutMismatchConfig)
    records_unreadable: UnreadableConfig = field(default_factory=UnreadableConfig)
    alert_config_invalid: RunFactConfig = field(default_factory=RunFactConfig)
    metric_nonfinite: NonfiniteConfig = field(
        default_factory=lambda: NonfiniteConfig(
            metrics=("loss", "grad_norm", "reward_mean", "entropy")
        )
    )

    def merged(self, overrides: Mapping[str, Any], source: str) -> AlertConfig:
        """A copy with `overrides` applied; RulesError names any bad key and `source`."""
        return _merge(self, overrides, source, "")

    def blocks(self, rows: int) -> int:
        """A window given in rows, as a whole number of blocks (at least one)."""
        return max(1, math.ceil(rows / self.block_rows))


def read_rules_document(path: str | Path) -> dict[str, Any]:
    """The TOML document of a rules file; RulesError names the file if it cannot be used."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise RulesError(f"cannot read rules file {path}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"rules file {path} is not valid TOML: {e}") from e


def load_rules_file(path: str | Path, base: AlertConfig | None = None) -> AlertConfig:
    """Read a TOML thresholds file over `base` (defaults). RulesError on any problem."""
    document = read_rules_document(path)
    thresholds = {k: v for k, v in document.items() if k not in HANDED_OVER}
    return (base or AlertConfig()).merged(thresholds, str(path))


def config_for_run(base: AlertConfig, info: Mapping[str, Any] | None, source: str) -> AlertConfig:
    """`base` with the run's own `alerts` section of run.json (if any) applied on top."""
    overrides = (info or {}).get("alerts")
    if overrides is None:
        return base
    if not isinstance(overrides, Mapping):
        raise RulesError(f"{source}: 'alerts' must be an object, got {type(overrides).__name__}")
    return base.merged(overrides, source)


def _merge(obj: Any, overrides: Mapping[str, Any], source: str, prefix: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise RulesError(
                f"{source}: unknown key '{path}' (known here: {', '.join(sorted(known))})"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise RulesError(f"{source}: '{path}' must be a table of settings")
            changes[key] = _merge(current, value, source, f"{path}.")
        else:
            changes[key] = _coerce(current, value, source, path)
    return dataclasses.replace(obj, **changes)


def _coerce(current: Any, value: Any, source: str, path: str) -> Any:
    """Check `value` has the type of the default it replaces (ints may stand for floats)."""

    def bad(expected: str) -> RulesError:
        return RulesError(f"{source}: '{path}' must be {expected}, got {value!r}")

    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(current, int):
        low = 1 if path.endswith("block_rows") else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad(f"a whole number >= {low}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if isinstance(current, tuple):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        raise bad("a string")
    if path.endswith("severity") and value not in SEVERITIES:
        raise bad(f"one of {', '.join(SEVERITIES)}")
    return value
