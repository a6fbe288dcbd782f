"""The alert engine: streaming detectors over a run's rows → `Alert` episodes.

`AlertEngine.update(run)` feeds the rows appended since the last call (O(new rows),
vectorized); the verdicts do not depend on how rows were split into calls. Row rules
(kl_nonfinite, kl_spike) judge each row; level rules judge robust medians of aligned blocks
of `block_rows` rows, so they fire at most one block late. Thresholds: monitor/rules.py;
what each rule means and why: docs/alerts.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from monitor.episodes import (
    BlockReference,
    Episodes,
    Event,
    ForwardFill,
    Tail,
    trailing_mean,
    trailing_median,
)
from monitor.presets import KLMeaning
from monitor.rules import RULE_IDS, AlertConfig, config_for_run
from monitor.run import Run

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
MAD_TO_SIGMA = 1.4826  # MAD of a normal sample × this estimates its σ
MEDIAN_SE = 1.2533  # standard error of a normal sample's median, in units of σ/√n
LOG_FLOOR = 1e-8  # KL values at or below this count as this on the log scale


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str  # info | warning | critical
    step: int  # first step of the episode
    end_step: int | None  # step where it cleared; None while active
    metric: str
    value: float
    message: str

    @property
    def active(self) -> bool:
        return self.end_step is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a non-finite value becomes None (JSON has no NaN)."""
        value = self.value if math.isfinite(self.value) else None
        return {
            "rule": self.rule,
            "severity": self.severity,
            "step": self.step,
            "end_step": self.end_step,
            "metric": self.metric,
            "value": value,
            "message": self.message,
        }


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


def resolve_thresholds(
    config: AlertConfig, info: Mapping[str, Any], meaning: KLMeaning | None = None
) -> Thresholds:
    """What this run's KL is compared with. Units come from `meaning` (monitor.presets, the
    one owner of what a run's KL means) when given, else from run.json's `kl.units`."""
    kl = info.get("kl") if isinstance(info.get("kl"), Mapping) else {}
    run_config = info.get("config") if isinstance(info.get("config"), Mapping) else {}
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
    return Thresholds(low, high, growth_level, target, scaled, unit, bounds, band_off)


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


class AlertEngine:
    """Streaming detectors for one run. Feed it with `update(run)` after each refresh."""

    def __init__(self, config: AlertConfig | None = None, info: dict | None = None) -> None:
        self.base_config = config or AlertConfig()
        self._info = info
        self._reported: set[tuple[str, str, int]] = set()
        self._stall: Alert | None = None
        self._reset()

    # -- public -----------------------------------------------------------------------------

    @property
    def alerts(self) -> list[Alert]:
        """Every episode so far in the order raised; active ones have end_step None."""
        found = self._alerts + ([self._stall] if self._stall else [])
        return sorted(found, key=_alert_order)

    @property
    def rows_seen(self) -> int:
        return self._rows

    def update(self, run: Run) -> list[Alert]:
        """Feed rows [rows_seen, run.n_rows); return alerts raised by them (not seen before)."""
        if run.generation != self._generation or run.n_rows < self._rows:
            self._reset()  # rows were rewritten (resume, replaced file): start over
        self._generation = run.generation
        n = run.n_rows
        if n == self._rows:
            return []
        if self._rows == 0:
            self._start(run)
        before = len(self._alerts)
        sl = slice(self._rows, n)
        self._logged = set(run.series_names)
        columns = {
            # run.column() of a never-logged series allocates the whole run: O(n), not O(new)
            name: run.column(name)[sl] if name in self._logged else np.full(n - self._rows, np.nan)
            for name in self._needed_columns(run)
        }
        self._feed(run.steps[sl], columns)
        self.meaning = getattr(run, "meaning", self.meaning)  # β from a config read later
        self._feed_leash(run.steps[sl], columns["beta"])
        self._rows = n
        fresh = []
        for alert in sorted(self._alerts[before:], key=_alert_order):
            key = (alert.rule, alert.metric, alert.step)
            if key not in self._reported:
                self._reported.add(key)
                fresh.append(alert)
        return fresh

    def alerts_now(self, run: Run, now: float | None = None) -> list[Alert]:
        """`alerts` with the wall-clock `run_stalled` brought up to date first."""
        self.check_stall(run, now)
        return self.alerts

    def check_stall(self, run: Run, now: float | None = None) -> Alert | None:
        """`run_stalled` from the wall clock: active while run.json says running and nothing
        was written for max(min_seconds, factor × usual step interval)."""
        cfg = self.config.run_stalled
        now = time.time() if now is None else now
        idle = run.seconds_since_write(now)
        interval = run.typical_step_interval()
        # The run's status is decided in one place (monitor.run.run_status), with this rule's
        # factor, so the sidebar says "stalled" exactly when this alert is active.
        status = run.status(now, stall_factor=cfg.factor, stall_min_s=cfg.min_seconds)
        stalled = cfg.enabled and status == "stalled" and idle is not None
        if stalled and self._stall is None:
            usual = f"{interval:.3g} s" if interval else "unknown"
            self._stall = Alert(
                "run_stalled",
                cfg.severity,
                run.last_step or 0,
                None,
                "time",
                float(idle),
                f"No record written for {_duration(idle)} (usual step interval {usual}) while "
                "run.json says running: check the trainer process (crash, OOM kill, hung "
                "collective, full disk).",
            )
        elif not stalled and self._stall is not None and self._stall.active:
            self._stall = replace(self._stall, end_step=run.last_step or self._stall.step)
        return self._stall if self._stall and self._stall.active else None

    # -- setup ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._generation = -1
        self._rows = 0
        self._alerts: list[Alert] = []
        self._open: dict[str, int] = {}  # rule -> index of its active alert
        self._detectors: list[_BlockRule] = []
        self.config = self.base_config

    def _start(self, run: Run) -> None:
        info = self._info if self._info is not None else run.info
        source = str(getattr(run, "info_path", "run.json")) if self._info is None else "run info"
        self.config = config_for_run(self.base_config, info, f"{source} (alerts)")
        self.meaning: KLMeaning | None = getattr(run, "meaning", None)
        self.th = resolve_thresholds(self.config, info, self.meaning)
        self._first_step: int | None = None
        self._beta_seen = (0, 0.0)  # finite β values seen, their largest magnitude
        cfg = self.config
        self._ffill = {name: ForwardFill() for name in ("kl_mean", "kl_max", "beta", "reward_mean")}
        self._spike_fill = {m: ForwardFill() for m in cfg.kl_spike.metrics}
        self._spike_refs = {
            m: BlockReference(
                cfg.block_rows,
                cfg.blocks(cfg.kl_spike.window_rows),
                cfg.kl_spike.min_reference_rows,
            )
            for m in cfg.kl_spike.metrics
        }
        self._row_episodes = {
            "kl_spike": Episodes(1, cfg.kl_spike.clear_rows),
            "kl_nonfinite": Episodes(1, cfg.kl_nonfinite.clear_rows),
        }
        self._pending: dict[str, np.ndarray] = {}
        self._blocks_seen = 0
        self._detectors = _block_rules(cfg, self.th)
        self._history = {
            name: Tail(max(d.history for d in self._detectors) if self._detectors else 0)
            for name in ("level", "se", "reward")
        }

    def _needed_columns(self, run: Run) -> list[str]:
        names = {"kl_mean", "kl_max", "beta", "reward_mean", self.config.band.length_column}
        names.update(self.config.kl_spike.metrics, self.config.kl_nonfinite.metrics)
        return sorted(names)

    # -- feeding ----------------------------------------------------------------------------

    def _feed(self, steps: np.ndarray, raw: dict[str, np.ndarray]) -> None:
        scale = self._per_token_scale(raw)
        self._feed_nonfinite(steps, raw)
        self._feed_spikes(steps, raw, scale)
        filled = {name: self._ffill[name](raw[name]) for name in self._ffill}
        rows = {
            "step": steps.astype(np.float64),
            "level": filled["kl_mean"] / scale,
            "native": filled["kl_mean"],
            "beta": filled["beta"],
            "reward": filled["reward_mean"],
        }
        self._feed_blocks(rows)

    def _per_token_scale(self, raw: dict[str, np.ndarray]) -> np.ndarray | float:
        if not self.th.per_token_scaled:
            return 1.0
        length = raw[self.config.band.length_column]
        ok = np.isfinite(length) & (length > 0)
        return np.where(ok, length, self.config.band.typical_response_len)

    def _feed_nonfinite(self, steps: np.ndarray, raw: dict[str, np.ndarray]) -> None:
        cfg = self.config.kl_nonfinite
        if not cfg.enabled:
            return
        # A series the run never logged reads as all-NaN: that is absence, not divergence.
        bad = {m: ~np.isfinite(raw[m]) for m in cfg.metrics if m in self._logged}
        cond = np.logical_or.reduce(list(bad.values())) if bad else np.zeros(steps.size, bool)
        for event in self._row_episodes["kl_nonfinite"].feed(cond, steps):
            if event.kind == "end":
                self._close("kl_nonfinite", event.step)
                continue
            metric = next(m for m in cfg.metrics if bad[m][event.index])
            value = float(raw[metric][event.index])
            self._open_alert(
                "kl_nonfinite",
                cfg.severity,
                event.step,
                metric,
                value,
                f"{metric} is {value} at step {event.step}: training has likely diverged — "
                "stop, restore the last good checkpoint and lower the learning rate (or look "
                "for fp16 overflow / a zero-probability token in the logprobs).",
            )

    def _feed_spikes(
        self, steps: np.ndarray, raw: dict[str, np.ndarray], scale: np.ndarray | float
    ) -> None:
        cfg = self.config.kl_spike
        if not cfg.enabled or not cfg.metrics:
            return
        min_log = max(math.log(cfg.min_ratio), 0.0)
        hits, ratios, medians = {}, {}, {}
        for m in cfg.metrics:
            value = raw[m] / scale
            filled = self._spike_fill[m](value)
            x = np.log(np.maximum(filled, LOG_FLOOR))
            med, mad = self._spike_refs[m].feed(x)
            # The reference never drops below min_value: early in training KL rises from ~0,
            # and 0.01 against a median of 1e-8 is a ratio of a million but no spike.
            ref = np.maximum(med, math.log(cfg.min_value)) if cfg.min_value > 0 else med
            with np.errstate(invalid="ignore"):
                excess = x - ref
                hits[m] = (
                    np.isfinite(value)
                    & (excess > np.maximum(cfg.z * MAD_TO_SIGMA * mad, min_log))
                    & (value >= cfg.min_value)
                )
            ratios[m], medians[m] = np.exp(excess), np.exp(ref)
        cond = np.logical_or.reduce(list(hits.values()))
        for event in self._row_episodes["kl_spike"].feed(cond, steps):
            if event.kind == "end":
                self._close("kl_spike", event.step)
                continue
            i = event.index
            m = next(m for m in cfg.metrics if hits[m][i])
            value = float(raw[m][i])
            med_native = float(medians[m][i] * (scale[i] if np.ndim(scale) else scale))
            self._open_alert(
                "kl_spike",
                cfg.severity,
                int(steps[i]),
                m,
                value,
                f"{m} spiked to {value:.3g} at step {int(steps[i])}, {ratios[m][i]:.0f}× its "
                f"recent level {med_native:.3g}: read this step's samples for a reward "
                "exploit, and if spikes recur lower the learning rate or clip harder.",
            )

    def _feed_blocks(self, rows: dict[str, np.ndarray]) -> None:
        b = self.config.block_rows
        joined = {
            k: np.concatenate((self._pending[k], v)) if self._pending else v
            for k, v in rows.items()
        }
        n_full = joined["step"].size // b
        self._pending = {k: v[n_full * b :].copy() for k, v in joined.items()}
        if n_full == 0:
            return
        blocks = {k: v[: n_full * b].reshape(n_full, b) for k, v in joined.items()}
        stats = _block_stats(blocks)
        self._blocks_seen += n_full
        context = {
            "level": self._history["level"].extend(stats["level"]),
            "se": self._history["se"].extend(stats["se"]),
            "reward": self._history["reward"].extend(stats["reward"]),
        }
        for detector in self._detectors:
            cond, values = detector.condition(stats, context, n_full)
            hold, quick = values.pop("hold", None), values.pop("quick", None)
            steps = stats["step"].astype(np.int64)
            for event in detector.episodes.feed(cond, steps, hold, quick):
                if event.kind == "end":
                    self._close(detector.rule, event.step)
                else:
                    value = float(stats[detector.value_key][event.index])
                    self._open_alert(
                        detector.rule,
                        detector.severity,
                        event.step,
                        detector.metric,
                        value,
                        detector.message(event, stats, values),
                    )

    def _feed_leash(self, steps: np.ndarray, beta: np.ndarray) -> None:
        """no_kl_penalty / kl_missing: facts about the run as a whole, not about a step."""
        if self._first_step is None and steps.size:
            self._first_step = int(steps[0])
        finite = beta[np.isfinite(beta)]
        if finite.size:
            count, largest = self._beta_seen
            self._beta_seen = (count + finite.size, max(largest, float(np.abs(finite).max())))
        if self._first_step is None or self.meaning is None:
            return
        leash = self._leash_problem()
        for rule in ("no_kl_penalty", "kl_missing"):
            section = getattr(self.config, rule)
            wanted = section.enabled and leash is not None and leash[0] == rule
            if wanted and rule not in self._open:
                metric, value = ("beta", 0.0) if rule == "no_kl_penalty" else ("kl_mean", math.nan)
                self._open_alert(rule, section.severity, self._first_step, metric, value, leash[1])
            elif not wanted and rule in self._open:
                self._close(rule, int(steps[-1]))

    def _leash_problem(self) -> tuple[str, str] | None:
        m = self.meaning
        assert m is not None
        count, largest = self._beta_seen
        if m.beta == 0.0 or (m.beta_logged and count and largest == 0.0):
            where = "the config" if m.beta == 0.0 else "every logged β"
            return (
                "no_kl_penalty",
                f"β = 0 ({where}): this run has no KL penalty, nothing holds the policy near "
                "its reference — expect reward hacking; set β (e.g. TRL GRPO beta=0.04) if "
                "that is not intended.",
            )
        if m.kl_found:
            return None
        if m.kl_skipped_without_penalty and not m.beta:
            return (
                "no_kl_penalty",
                f"No KL is logged: {m.trainer} skips the KL term (and its logging) when β = 0, "
                "so this run most likely has no KL penalty — set beta > 0 to put a leash on "
                "the policy.",
            )
        looked = ", ".join(sorted(m.mapping)) or "none of klwatch's series"
        return (
            "kl_missing",
            f"No KL series found (preset {m.preset or 'none'}; found {looked}): klwatch cannot "
            "watch the leash of this run — pick the trainer with --preset or map the KL name "
            "in a preset file.",
        )

    # -- alert bookkeeping ------------------------------------------------------------------

    def _open_alert(
        self, rule: str, severity: str, step: int, metric: str, value: float, message: str
    ) -> None:
        self._open[rule] = len(self._alerts)
        self._alerts.append(Alert(rule, severity, step, None, metric, value, message))

    def _close(self, rule: str, end_step: int) -> None:
        index = self._open.pop(rule, None)
        if index is not None:
            self._alerts[index] = replace(self._alerts[index], end_step=end_step)


def _block_stats(blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per block: first step, robust level and its standard error (median, MAD), mean and
    standard error (sign tests), β, reward."""
    level = blocks["level"]
    size = level.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = level.std(axis=1, ddof=1) / math.sqrt(size) if size > 1 else np.zeros(len(level))
    median = np.median(level, axis=1)
    mad = np.median(np.abs(level - median[:, None]), axis=1)
    return {
        "step": blocks["step"][:, 0],
        "level": median,
        "se": MEDIAN_SE * MAD_TO_SIGMA * mad / math.sqrt(size),
        "native": np.median(blocks["native"], axis=1),
        "mean": level.mean(axis=1),
        "sem": sem,
        "beta": np.median(blocks["beta"], axis=1),
        "reward": np.median(blocks["reward"], axis=1),
    }


# -- block rules ------------------------------------------------------------------------------

Condition = tuple[np.ndarray, dict[str, np.ndarray]]


@dataclass
class _BlockRule:
    rule: str
    severity: str
    metric: str
    episodes: Episodes
    history: int  # block values of the past this rule's windows reach back over
    condition: Callable[[dict[str, np.ndarray], dict[str, np.ndarray], int], Condition]
    message: Callable[[Event, dict[str, np.ndarray], dict[str, np.ndarray]], str]
    value_key: str = "native"  # the block statistic reported as the alert's value


def _block_rules(cfg: AlertConfig, th: Thresholds) -> list[_BlockRule]:
    rules = [
        _kl_high(cfg, th),
        _kl_low(cfg, th),
        _kl_negative(cfg, th),
        _kl_growth(cfg, th),
        _beta_saturated(cfg, th),
        _reward_hacking(cfg, th),
    ]
    return [r for r in rules if r is not None]


def _episodes(cfg: AlertConfig, section: Any) -> Episodes:
    return Episodes(cfg.blocks(section.sustain_rows), cfg.blocks(section.clear_rows))


def _kl_high(cfg: AlertConfig, th: Thresholds) -> _BlockRule | None:
    sec = cfg.kl_high
    if not sec.enabled:
        return None

    def condition(stats: dict, _ctx: dict, _n: int) -> Condition:
        with np.errstate(invalid="ignore"):
            return (stats["level"] > th.high) & (stats["step"] >= sec.warmup_steps), {}

    def message(event: Event, stats: dict, _v: dict) -> str:
        level = stats["level"][event.index]
        return (
            f"Mean KL has stayed above the healthy band since step {event.step} ({level:.3g} > "
            f"{th.high:.3g}{th.unit}): the policy is drifting far from the reference — raise β "
            "or lower the learning rate, and read samples for reward hacking."
        )

    return _BlockRule(
        "kl_high", sec.severity, "kl_mean", _episodes(cfg, sec), 0, condition, message
    )


def _kl_low(cfg: AlertConfig, th: Thresholds) -> _BlockRule | None:
    sec = cfg.kl_low
    if not sec.enabled:
        return None

    def condition(stats: dict, _ctx: dict, _n: int) -> Condition:
        with np.errstate(invalid="ignore"):
            return (stats["level"] < th.low) & (stats["step"] >= sec.warmup_steps), {}

    def message(event: Event, stats: dict, _v: dict) -> str:
        level = stats["level"][event.index]
        return (
            f"Mean KL has stayed below the healthy band since step {event.step} ({level:.3g} < "
            f"{th.low:.3g}{th.unit}): the policy is barely moving — β may be too strong or the "
            "learning rate too small."
        )

    return _BlockRule("kl_low", sec.severity, "kl_mean", _episodes(cfg, sec), 0, condition, message)


def _kl_negative(cfg: AlertConfig, th: Thresholds) -> _BlockRule | None:
    sec = cfg.kl_negative
    if not sec.enabled:
        return None

    def condition(stats: dict, _ctx: dict, _n: int) -> Condition:
        mean, sem = stats["mean"], stats["sem"]
        with np.errstate(invalid="ignore", divide="ignore"):
            # sem == 0 (a constant negative estimate) is as significant as it gets.
            significant = np.where(sem > 0, mean / np.where(sem > 0, sem, 1.0) < -sec.t, True)
            return (mean < 0) & significant, {}

    def message(event: Event, stats: dict, _v: dict) -> str:
        return (
            f"The mean KL estimate has been below zero since step {event.step} "
            f"({stats['mean'][event.index]:.3g}): sampling and scoring disagree — check "
            "generation settings (temperature, top-k/p), dropout left on, and padding or "
            "masking of the logprobs."
        )

    return _BlockRule(
        "kl_negative", sec.severity, "kl_mean", _episodes(cfg, sec), 0, condition, message
    )


def _kl_growth(cfg: AlertConfig, th: Thresholds) -> _BlockRule | None:
    sec = cfg.kl_growth
    if not sec.enabled:
        return None
    g = cfg.blocks(sec.segment_rows)
    f = cfg.blocks(sec.fast_segment_rows)

    def segments(ctx: dict, n: int, width: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Levels of four consecutive segments of `width` blocks ending at each new block
        (mean of block medians: these are robust already, their mean is the less noisy
        level), oldest first, and the variances of those means."""
        seg = trailing_mean(ctx["level"], n + 3 * width, width)
        var = trailing_mean(ctx["se"] ** 2, n + 3 * width, width) / width
        levels = [seg[k * width : k * width + n] for k in range(4)]
        variances = [var[k * width : k * width + n] for k in range(4)]
        return levels, variances

    def condition(stats: dict, ctx: dict, n: int) -> Condition:
        # Long scale: three rises in a row, none much smaller than the one before — steady
        # (linear) or faster growth. A step up smoothed by the segment means makes at most
        # two rises. Must hold for sustain_rows.
        (s0, s1, s2, s3), _ = segments(ctx, n, g)
        d0, d1, d2 = s1 - s0, s2 - s1, s3 - s2
        rel, ratio = sec.min_relative_rise, sec.min_accel_ratio
        # Short scale: every segment above the band, three significant rises, each at least
        # the one before, and a significant acceleration — a fast runaway, fired at once.
        (f0, f1, f2, f3), (v0, v1, v2, v3) = segments(ctx, n, f)
        e0, e1, e2 = f1 - f0, f2 - f1, f3 - f2
        frel, z = sec.fast_min_relative_rise, sec.fast_z_rise
        with np.errstate(invalid="ignore"):
            above = (s3 > th.growth_level) & (d0 >= rel * s1) & (d1 >= rel * s2)
            steady = above & (d1 >= ratio * d0) & (d2 >= ratio * d1) & (d2 >= rel * s3)
            fast = (
                (f0 > th.growth_level)
                & (e0 >= np.maximum(frel * f1, z * np.sqrt(v0 + v1)))
                & (e1 >= np.maximum(frel * f2, z * np.sqrt(v1 + v2)))
                & (e2 >= np.maximum(frel * f3, z * np.sqrt(v2 + v3)))
                & (e1 >= e0)
                & (e2 >= e1)
                & (e2 - e0 >= sec.fast_z_accel * np.sqrt(v0 + v1 + v2 + v3))
            )
            # Once raised, it clears only when the rise has clearly slowed (noise hysteresis):
            # half the long-scale thresholds, or (short scale) still rising at half the pace.
            hold = (s3 > th.growth_level) & (d2 >= 0.5 * ratio * d1) & (d2 >= 0.5 * rel * s3)
            hold |= (f3 > th.growth_level) & (e2 >= 0.5 * frel * f3)
        late = np.where(fast, f3, s3)
        rise = np.where(fast, e2, d2)
        rows = np.where(fast, f, g) * cfg.block_rows
        values = {"late": late, "rise": rise, "rows": rows, "fast": fast}
        return steady, {**values, "hold": hold, "quick": fast}

    def message(event: Event, _stats: dict, v: dict) -> str:
        i = event.index
        late, rise, rows = v["late"][i], v["rise"][i], int(v["rows"][i])
        where = f"target × {sec.over_target:g}" if th.target else "the healthy band"
        shape = "faster and faster" if v["fast"][i] else "without levelling off"
        return (
            f"Mean KL keeps climbing {shape} ({late:.3g}{th.unit}, +{rise:.3g} over the last "
            f"{rows} rows, above {where}) since step {event.step}: raise β or lower the "
            "learning rate before the policy runs away."
        )

    return _BlockRule(
        "kl_growth",
        sec.severity,
        "kl_mean",
        _episodes(cfg, sec),
        4 * max(g, f),
        condition,
        message,
    )


def _beta_saturated(cfg: AlertConfig, th: Thresholds) -> _BlockRule | None:
    sec = cfg.beta_saturated
    if not sec.enabled or th.beta_bounds is None:
        return None
    lo_bound, hi_bound = th.beta_bounds
    too_high = th.target * sec.off_target_ratio if th.target else th.high
    too_low = th.target / sec.off_target_ratio if th.target else th.low

    def condition(stats: dict, _ctx: dict, _n: int) -> Condition:
        beta, level = stats["beta"], stats["level"]
        with np.errstate(invalid="ignore"):
            at_max = np.abs(beta - hi_bound) <= sec.relative_tolerance * hi_bound
            at_min = np.abs(beta - lo_bound) <= sec.relative_tolerance * lo_bound
            return (at_max & (level > too_high)) | (at_min & (level < too_low)), {}

    def message(event: Event, stats: dict, _v: dict) -> str:
        beta, level = stats["beta"][event.index], stats["level"][event.index]
        if abs(beta - hi_bound) <= sec.relative_tolerance * hi_bound:
            return (
                f"β has been pinned at its upper bound {beta:.3g} since step {event.step} while "
                f"mean KL ({level:.3g}) is still above target: the controller cannot pull KL "
                "back — raise beta_max or lower the learning rate."
            )
        return (
            f"β has been pinned at its lower bound {beta:.3g} since step {event.step} while mean"
            f" KL ({level:.3g}) is still below target: the controller cannot let the policy "
            "move — lower beta_min or the target KL, or raise the learning rate."
        )

    return _BlockRule(
        "beta_saturated",
        sec.severity,
        "beta",
        _episodes(cfg, sec),
        0,
        condition,
        message,
        value_key="beta",
    )


def _reward_hacking(cfg: AlertConfig, th: Thresholds) -> _BlockRule | None:
    sec = cfg.reward_hacking
    if not sec.enabled:
        return None
    h = cfg.blocks(sec.segment_rows)

    def condition(_stats: dict, ctx: dict, n: int) -> Condition:
        kl = trailing_median(ctx["level"], n + h, h)
        reward = trailing_median(ctx["reward"], n + h, h)
        kl_early, kl_late = kl[:n], kl[h:]
        r_early, r_late = reward[:n], reward[h:]
        with np.errstate(invalid="ignore", divide="ignore"):
            kl_rise = kl_late / kl_early - 1.0
            r_rise = (r_late - r_early) / np.maximum(np.abs(r_early), 1e-12)
            cond = (
                (kl_early > 0)
                & (kl_late > th.growth_level)
                & (kl_rise >= sec.min_kl_rise)
                & (r_rise >= sec.min_reward_rise)
                & (kl_rise >= sec.kl_vs_reward * r_rise)
            )
        return cond, {"kl_rise": kl_rise, "r_rise": r_rise, "kl": kl_late}

    def message(event: Event, _stats: dict, v: dict) -> str:
        i = event.index
        return (
            f"Reward rose {v['r_rise'][i]:.0%} while mean KL rose {v['kl_rise'][i]:.0%} over the "
            f"last {h * cfg.block_rows} rows (KL {v['kl'][i]:.3g}{th.unit}, since step "
            f"{event.step}): the policy may be exploiting the reward model — read recent "
            "samples, and consider raising β or stopping at an earlier checkpoint."
        )

    return _BlockRule(
        "reward_hacking", sec.severity, "kl_mean", _episodes(cfg, sec), 2 * h, condition, message
    )


def _alert_order(alert: Alert) -> tuple[int, int]:
    """By first step, then rule: the same order however the rows were batched."""
    return alert.step, RULE_IDS.index(alert.rule)


def worst_severity(alerts: list[Alert]) -> str | None:
    if not alerts:
        return None
    return max((a.severity for a in alerts), key=SEVERITY_RANK.__getitem__)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
