"""The alert engine: streaming detectors over a run's rows → `Alert` episodes.

`AlertEngine.update(run)` feeds the rows appended since the last call (O(new rows),
vectorized); the verdicts do not depend on how rows were split into calls. Row rules
(kl_nonfinite, kl_spike) judge each row; level rules judge robust medians of aligned blocks
of `block_rows` rows, so they fire at most one block late. Thresholds: monitor/rules.py;
what each rule means and why: docs/alerts.md.
"""

from __future__ import annotations

import itertools
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
from monitor.trend import mann_kendall_z, trailing_extreme, trailing_noise, window_evidence

_NEVER = 2**62  # an Episodes sustain that is never reached
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
MAD_TO_SIGMA = 1.4826  # MAD of a normal sample × this estimates its σ
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
        keep = max(d.history for d in self._detectors) if self._detectors else 0
        self._points_per_block = cfg.kl_growth.points_per_block(cfg.block_rows)
        self._history = {name: Tail(keep) for name in ("level", "reward")}
        self._history["points"] = Tail(keep * self._points_per_block)

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
            "reward": self._history["reward"].extend(stats["reward"]),
        }
        if self.config.kl_growth.enabled:  # its evidence: medians of slices of each block
            points = _sub_block_medians(blocks["level"], self._points_per_block)
            context["points"] = self._history["points"].extend(points.ravel())
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
    """Per block: first step, robust level (median), mean and standard error (sign tests),
    β, reward."""
    level = blocks["level"]
    size = level.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = level.std(axis=1, ddof=1) / math.sqrt(size) if size > 1 else np.zeros(len(level))
    return {
        "step": blocks["step"][:, 0],
        "level": np.median(level, axis=1),
        "native": np.median(blocks["native"], axis=1),
        "mean": level.mean(axis=1),
        "sem": sem,
        "beta": np.median(blocks["beta"], axis=1),
        "reward": np.median(blocks["reward"], axis=1),
    }


def _sub_block_medians(level: np.ndarray, parts: int) -> np.ndarray:
    """(blocks, parts): medians of `parts` consecutive, near-equal slices of each block's rows
    (kl_growth's points: fine enough for a trend inside a 150-row window, robust to spikes)."""
    size = level.shape[1]
    if parts <= 1:
        return np.median(level, axis=1)[:, None]
    if size % parts == 0:
        return np.median(level.reshape(len(level), parts, size // parts), axis=2)
    bounds = (np.arange(parts + 1) * size) // parts
    return np.stack(
        [np.median(level[:, a:b], axis=1) for a, b in itertools.pairwise(bounds)],
        axis=1,
    )


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
    """Mean KL climbing without levelling off (docs/alerts.md, kl_growth: the tests and why).

    Judged at every block on trailing windows of min_window_rows, 2×, 4×, … max_window_rows
    (150/300/600/1200; those the run has rows for), each made of `point_rows`-row medians of
    KL. A window fires when KL ends above the growth level with every block above a floor, it
    is a new high, its points rise (Mann–Kendall) in the whole window and in each half, the
    second half climbs at least `min_slope_ratio` as fast as the first (in KL units, by
    `z_steady` standard errors), the level moved accordingly, and the window half its length
    says its own second half still climbs. An alert starts where one window has fired at
    verdicts spanning `sustain_rows`; it holds while a window still climbs.
    """
    sec = cfg.kl_growth
    if not sec.enabled:
        return None
    k = sec.points_per_block(cfg.block_rows)
    windows = sorted({cfg.blocks(rows) for rows in sec.window_rows()})
    lookback = cfg.blocks(sec.lookback_rows)
    # Verdicts in a row each window needs: its rows plus the later verdicts' span
    # sustain_rows, and never fewer than two (a ramp that fills a window fills it once).
    need = {w: max(2, 1 + cfg.blocks(sec.sustain_rows) - w) for w in windows}
    # Each half must rise by z_half; a half as long as two shortest windows has the power for
    # z_half_long: a flat stretch that passes z_half by chance, then a jump, must not make a
    # long window fire.
    z_halves = {w: sec.z_half_long if w >= 4 * windows[0] else sec.z_half for w in windows}
    episodes = Episodes(_NEVER, cfg.blocks(sec.clear_rows))  # starts only where `quick` holds
    streak = dict.fromkeys(windows, 0)  # verdicts in a row each window fired, up to the last block
    m = windows[0]  # a new high is judged on the mean of the latest m blocks

    def condition(_stats: dict, ctx: dict, n: int) -> Condition:
        level = ctx["level"]
        ends = np.arange(level.size - n, level.size)  # the new blocks, in the joined history
        latest = level[ends]
        values = {
            "latest": latest,
            "rise": np.full(n, np.nan),
            "rows": np.zeros(n, np.int64),
            "ratio": np.full(n, np.nan),
        }
        seen, on, hold = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        with np.errstate(invalid="ignore"):
            judged = np.flatnonzero(latest > th.growth_level)  # nothing fires or holds below
        log_points = np.log(np.maximum(ctx["points"], LOG_FLOOR))
        # A new high: the mean of the latest m block medians (log) above every such mean of
        # the lookback before them (none yet counts as one), by new_high_z standard errors.
        smooth = trailing_mean(np.log(np.maximum(level, LOG_FLOOR)), level.size, m)
        at = ends[judged]
        noise = trailing_noise(log_points, (at + 1) * k - 1, m * k)
        with np.errstate(invalid="ignore"):
            gap = smooth[at] - trailing_extreme(smooth, at - m, lookback, "max")
            new_high = ~(gap < sec.new_high_z * noise / math.sqrt(m * k))
        # Fires need a new high; holds matter only while an alert is active.
        candidates = judged[new_high]
        fires = {w: np.zeros(n, bool) for w in windows}
        if candidates.size:
            fired, _, found = _growth_windows(
                level, log_points, ends[candidates], windows, k, z_halves, sec, th
            )
            for w in windows:
                fires[w][candidates] = fired[w]
        for w in windows:
            run, streak[w] = _streaks(fires[w], streak[w])
            on |= run >= need[w]
            seen |= fires[w]
        for w in reversed(windows) if candidates.size else []:  # the shortest one names it
            hit = candidates[fires[w][candidates]]
            values["rows"][hit] = w * cfg.block_rows
            for name in ("rise", "ratio"):
                values[name][hit] = found[w][name][fires[w][candidates]]
        first_on = np.flatnonzero(on)
        if episodes.active or first_on.size:
            held = judged if episodes.active else judged[judged >= first_on[0]]
            _, holds, _ = _growth_windows(
                level, log_points, ends[held], windows, k, z_halves, sec, th
            )
            hold[held] = np.logical_or.reduce(list(holds.values()))
        # `seen` marks where the stretch began; an episode starts only where `on` (quick) holds
        return seen, {**values, "hold": hold, "quick": on}

    def message(event: Event, _stats: dict, v: dict) -> str:
        i = event.index
        latest, rise, rows, ratio = v["latest"][i], v["rise"][i], int(v["rows"][i]), v["ratio"][i]
        where = f"target × {sec.over_target:g}" if th.target else "the healthy band"
        shape = "faster and faster" if ratio >= 1.5 else "steadily, without levelling off"
        return (
            f"Mean KL keeps climbing {shape} ({latest:.3g}{th.unit}, +{rise:.3g} over the last "
            f"{rows} rows, above {where}) since step {event.step}: raise β or lower the "
            "learning rate before the policy runs away."
        )

    return _BlockRule(
        "kl_growth", sec.severity, "kl_mean", episodes, max(windows) + lookback, condition, message
    )


def _growth_windows(
    level: np.ndarray,
    log_points: np.ndarray,
    ends: np.ndarray,
    windows: list[int],
    k: int,
    z_halves: dict[int, float],
    sec: Any,
    th: Thresholds,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, dict[str, np.ndarray]]]:
    """kl_growth's verdicts on the windows of each length in `windows` (blocks) ending at the
    blocks `ends` of the joined history (block medians `level`, log point medians
    `log_points`): fires, holds, and what to say, per window length."""
    evidence = window_evidence(log_points, (ends + 1) * k - 1, [w * k for w in windows])
    latest = level[ends]
    r0 = sec.min_slope_ratio
    fires, holds, found = {}, {}, {}
    recent = np.ones(ends.size, bool)  # the shorter window's verdict on its own second half
    for w in windows:  # shortest first: each judges the latest half of the next
        ev, size = evidence[w * k], w * k
        half = size // 2
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # Slopes in KL units per point: a log-scale slope times its half's (geometric) level.
            level_a, level_b = np.exp(ev["first_mean"]), np.exp(ev["last_mean"])
            slope_a, slope_b = level_a * ev["first"], level_b * ev["last"]
            # Not levelling off: slope_b − r0 · slope_a above 0 by `z_steady` standard errors.
            se = ev["noise"] * ev["se_per_sigma"] * np.hypot(level_b, r0 * level_a)
            steady = slope_b - r0 * slope_a >= sec.z_steady * se
            # Climbing moves the level: the second half sits above the first by at least
            # `min_level_rise` of what the first half's slope carried on would give (each half
            # of an oscillation can tilt up, at the same height).
            moved = level_b - level_a >= sec.min_level_rise * slope_a * (size - half)
            z_first = mann_kendall_z(ev["s_first"], half)
            z_last = mann_kendall_z(ev["s_last"], half)
            # A longer window also needs its latest half still climbing, as the window of that
            # length judged it (a step up in the middle of a window looks steady to the
            # window's halves; its second half levels off).
            fires[w] = recent & (
                (trailing_extreme(level, ends, w, "min") > sec.floor_fraction * th.growth_level)
                & (mann_kendall_z(ev["s"], size) >= sec.z_trend)
                & (z_first >= z_halves[w])
                & (z_last >= z_halves[w])
                & steady
                & moved
            )
            holds[w] = recent & (
                (z_last >= sec.z_hold) & (slope_b > 0) & (slope_b >= sec.hold_slope_ratio * slope_a)
            )
            found[w] = {
                "rise": latest - level[np.maximum(ends - w + 1, 0)],
                "ratio": slope_b / slope_a,
            }
            recent = (slope_b >= r0 * slope_a) | (z_last >= max(z_halves[w], sec.z_still_rising))
    return fires, holds, found


def _streaks(fired: np.ndarray, carry: int) -> tuple[np.ndarray, int]:
    """Consecutive True values ending at each position (`carry` of them before the first),
    and the count at the end: the next batch's carry."""
    position = np.arange(1, fired.size + 1)
    last_miss = np.maximum.accumulate(np.where(fired, 0, position))
    run = position - last_miss + np.where(last_miss == 0, carry, 0)
    return run, int(run[-1]) if run.size else carry


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
