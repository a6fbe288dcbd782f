"""The synthetic traces of bench_alert_quality.py's health section: planted problems and
healthy shapes for entropy_collapse, no_learning_signal, completions_truncated, grad_spike,
rollout_mismatch and kl_high / kl_low. Not a test.

Each shape is a noise-free curve per series plus noise at one of three levels:
log-normal noise of σ 0.1 / 0.3 / 0.5 (on the log scale) for positive series (entropy,
grad_norm, rollout_prob_diff, KL), and binomial noise for shares (zero_std_frac,
truncated_frac): the share of 16 / 8 / 4 prompt groups or completions per step.

`onset` is the first step the noise-free series is past the limit the rule judges (the
earliest it may speak; limits read from the default AlertConfig, so a tuned default moves
them); `start` is where the planted event begins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.alerts.config import AlertConfig


@dataclass(frozen=True)
class Noise:
    name: str
    sigma: float  # log-normal σ for positive series
    groups: int  # binomial draws per step for shares

    @property
    def label(self) -> str:
        return f"{self.name} (σ {self.sigma:g}, n {self.groups})"


LEVELS = (Noise("low", 0.1, 16), Noise("medium", 0.3, 8), Noise("high", 0.5, 4))

Series = Callable[[np.ndarray, Noise, np.random.Generator], dict[str, np.ndarray]]


@dataclass(frozen=True)
class HealthShape:
    name: str
    rule: str  # the rule this shape is about
    rows: int
    series: Series  # (steps, noise, rng) -> the columns logged (kl_mean among them or not)
    start: int | None = None  # the planted event's first step; None: healthy throughout
    onset: int | None = None  # first step past the rule's limit (noise-free)
    spike: int | None = None  # a single-row spike at this step (grad_spike: caught at ±2)
    note: str = ""

    @property
    def planted(self) -> bool:
        return self.start is not None


# -- noise ------------------------------------------------------------------------------------


def lognormal(level: np.ndarray, noise: Noise, rng: np.random.Generator) -> np.ndarray:
    return level * np.exp(rng.normal(0.0, noise.sigma, level.size))


def binomial_share(p: np.ndarray, noise: Noise, rng: np.random.Generator) -> np.ndarray:
    return rng.binomial(noise.groups, np.clip(p, 0.0, 1.0)) / noise.groups


def positive(name: str, curve: Callable[[np.ndarray], np.ndarray]) -> Series:
    return lambda t, noise, rng: {name: lognormal(curve(t), noise, rng)}


def share(name: str, curve: Callable[[np.ndarray], np.ndarray]) -> Series:
    return lambda t, noise, rng: {name: binomial_share(curve(t), noise, rng)}


# -- curves -----------------------------------------------------------------------------------


def flat(value: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: np.full(t.size, float(value))


def jump(before: float, after: float, at: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: np.where(t >= at, after, before).astype(float)


def ramp(before: float, after: float, start: int, rows: int) -> Callable[[np.ndarray], np.ndarray]:
    """Flat at `before`, straight to `after` over `rows` steps from `start`, flat after."""
    return lambda t: np.interp(t, [start, start + rows], [before, after])


def log_ramp(
    before: float, after: float, start: int, rows: int
) -> Callable[[np.ndarray], np.ndarray]:
    """As ramp, straight on the log scale (a constant factor per step: exponential)."""
    lo, hi = math.log(before), math.log(after)
    return lambda t: np.exp(np.interp(t, [start, start + rows], [lo, hi]))


def approach(start: float, end: float, tau: float) -> Callable[[np.ndarray], np.ndarray]:
    """From `start` towards `end` with time constant `tau` (levels off)."""
    return lambda t: end + (start - end) * np.exp(-t / tau)


def drift(start: float, end: float, rows: int) -> Callable[[np.ndarray], np.ndarray]:
    """Geometric drift from `start` to `end` over `rows` steps."""
    return lambda t: start * (end / start) ** (t / rows)


def first_step(curve: Callable[[np.ndarray], np.ndarray], rows: int, past: Callable) -> int:
    """The first step where `past(curve(t))` holds (the noise-free onset)."""
    t = np.arange(rows)
    hit = np.flatnonzero(past(curve(t)))
    if not hit.size:
        raise ValueError("the planted curve never passes the rule's limit")
    return int(hit[0])


def break_even(normal: float, bad: float) -> float:
    """The share above which a Bernoulli log-likelihood ratio (bad vs normal) is positive."""
    return math.log((1 - normal) / (1 - bad)) / math.log(bad * (1 - normal) / (normal * (1 - bad)))


# -- the shapes -------------------------------------------------------------------------------


def health_shapes(config: AlertConfig | None = None) -> list[HealthShape]:
    cfg = config or AlertConfig()
    ent, nls, trunc, mis = (
        cfg.entropy_collapse,
        cfg.no_learning_signal,
        cfg.completions_truncated,
        cfg.rollout_mismatch,
    )
    top, bottom = cfg.band.high, cfg.band.low
    zero_even = break_even(nls.normal_share, nls.dead_share)
    trunc_even = break_even(trunc.normal_share, trunc.truncated_share)
    shapes: list[HealthShape] = []

    # entropy_collapse: 4 → 0.3× / 0.2× of its start over steps 100–200 (exponential fall)
    for end in (0.3, 0.2):
        curve = log_ramp(4.0, 4.0 * end, 100, 100)
        onset = first_step(curve, 400, lambda x: x < ent.fraction * 4.0)
        shapes.append(
            HealthShape(
                f"entropy 4 → {end}× over 100 steps",
                "entropy_collapse",
                400,
                positive("entropy", curve),
                100,
                onset,
            )
        )
    # no_learning_signal: zero_std_frac 0.3 → 1.0 / 0.95 at step 100; grad_norm 0 from 100
    for after in (1.0, 0.95):
        curve = jump(0.3, after, 100)
        shapes.append(
            HealthShape(
                f"zero_std_frac 0.3 → {after:g} at 100",
                "no_learning_signal",
                400,
                share("zero_std_frac", curve),
                100,
                first_step(curve, 400, lambda x: x > zero_even),
            )
        )
    shapes.append(
        HealthShape(
            "grad_norm exactly 0 from 100",
            "no_learning_signal",
            400,
            lambda t, noise, rng: {
                "grad_norm": np.where(t >= 100, 0.0, lognormal(np.ones(t.size), noise, rng))
            },
            100,
            100,
        )
    )
    # completions_truncated: 0.2 → 1.0 / 0.7 over steps 100–150
    for after in (1.0, 0.7):
        curve = ramp(0.2, after, 100, 50)
        shapes.append(
            HealthShape(
                f"truncated_frac 0.2 → {after:g} over 100–150",
                "completions_truncated",
                400,
                share("truncated_frac", curve),
                100,
                first_step(curve, 400, lambda x: x > trunc_even),
            )
        )

    # grad_spike: one row 20× the noise-free level at step 300 (flagged at 298–302?)
    def spiked(t: np.ndarray, noise: Noise, rng: np.random.Generator) -> dict[str, np.ndarray]:
        grad = lognormal(np.ones(t.size), noise, rng)
        grad[300] = 20.0
        return {"grad_norm": grad}

    shapes.append(
        HealthShape("grad_norm spike 20× at 300", "grad_spike", 400, spiked, 300, 300, spike=300)
    )
    # rollout_mismatch: 0.003 → 0.03 at step 100; 0.002 → 0.05 exponentially over 100–400
    limit = mis.prob_diff_limit
    curve = jump(0.003, 0.03, 100)
    shapes.append(
        HealthShape(
            "rollout_prob_diff 0.003 → 0.03 at 100",
            "rollout_mismatch",
            400,
            positive("rollout_prob_diff", curve),
            100,
            first_step(curve, 400, lambda x: x > min(limit, mis.growth_factor * 0.003)),
        )
    )
    curve = log_ramp(0.002, 0.05, 100, 300)
    shapes.append(
        HealthShape(
            "rollout_prob_diff 0.002 → 0.05 exp. 100–400",
            "rollout_mismatch",
            500,
            positive("rollout_prob_diff", curve),
            100,
            first_step(curve, 500, lambda x: x > min(limit, mis.growth_factor * 0.002)),
            note="onset: 4× early level",
        )
    )
    # kl_high: in band (0.05) until step 100, then 5× / 2× / 1.5× the band's top
    for factor in (5.0, 2.0, 1.5):
        shapes.append(
            HealthShape(
                f"KL 0.05 → {factor:g}× top at 100",
                "kl_high",
                600,
                positive("kl_mean", jump(0.05, factor * top, 100)),
                100,
                100,
            )
        )
    # kl_low: 0.2× the bottom from a fast warm-up; judged from warmup_steps
    warm = cfg.kl_low.warmup_steps
    shapes.append(
        HealthShape(
            f"KL 0.2× bottom (judged from {warm})",
            "kl_low",
            600,
            positive("kl_mean", approach(1e-4, 0.2 * bottom, 20)),
            warm,
            warm,
        )
    )

    # -- healthy ------------------------------------------------------------------------------
    H = 2000
    shapes += [
        HealthShape(
            "entropy 4 → 0.6×, τ=200 (levels off)",
            "entropy_collapse",
            H,
            positive("entropy", approach(4.0, 2.4, 200)),
        ),
        HealthShape(
            "entropy 4 → 0.45×, τ=300 (limit)",
            "entropy_collapse",
            H,
            positive("entropy", approach(4.0, 1.8, 300)),
            note="limit: 1.12× the bar",
        ),
        HealthShape(
            "zero_std_frac 0.3", "no_learning_signal", H, share("zero_std_frac", flat(0.3))
        ),
        HealthShape(
            "zero_std_frac 0.45", "no_learning_signal", H, share("zero_std_frac", flat(0.45))
        ),
        HealthShape(
            "zero_std_frac 0.6", "no_learning_signal", H, share("zero_std_frac", flat(0.6))
        ),
        HealthShape(
            "zero_std_frac 0.8 (limit)",
            "no_learning_signal",
            H,
            share("zero_std_frac", flat(0.8)),
            note="limit: over normal 0.7",
        ),
        HealthShape(
            "truncated_frac 0.1", "completions_truncated", H, share("truncated_frac", flat(0.1))
        ),
        HealthShape(
            "truncated_frac 0.3", "completions_truncated", H, share("truncated_frac", flat(0.3))
        ),
        HealthShape(
            "truncated_frac 0.1↔0.3, period 500",
            "completions_truncated",
            H,
            share("truncated_frac", lambda t: 0.2 + 0.1 * np.sin(2 * np.pi * t / 500)),
        ),
        HealthShape(
            "grad_norm 1 → 0.3 drift", "grad_spike", H, positive("grad_norm", drift(1.0, 0.3, H))
        ),
        HealthShape(
            "grad_norm 1 → 3 drift", "grad_spike", H, positive("grad_norm", drift(1.0, 3.0, H))
        ),
        HealthShape(
            "rollout_prob_diff 0.003 flat",
            "rollout_mismatch",
            H,
            positive("rollout_prob_diff", flat(0.003)),
        ),
        HealthShape(
            "rollout_prob_diff 0.003 → 0.006 drift",
            "rollout_mismatch",
            H,
            positive("rollout_prob_diff", drift(0.003, 0.006, H)),
            note="limit: 0.006 = 2× early",
        ),
        HealthShape(
            "KL 0.095 (just under top)", "kl_high", H, positive("kl_mean", flat(0.95 * top))
        ),
        HealthShape("KL 0.09 (0.9× top)", "kl_high", H, positive("kl_mean", flat(0.9 * top))),
        HealthShape(
            "KL 0.1 (at top: limit)",
            "kl_high",
            H,
            positive("kl_mean", flat(top)),
            note="limit: on the edge",
        ),
        HealthShape("KL 0.012 (1.2× bottom)", "kl_low", H, positive("kl_mean", flat(1.2 * bottom))),
        HealthShape(
            "KL warm-up, 0.01 at step 300",
            "kl_low",
            H,
            positive("kl_mean", lambda t: 0.05 * (1 - np.exp(-t / 1344.0))),
        ),
    ]
    return shapes
