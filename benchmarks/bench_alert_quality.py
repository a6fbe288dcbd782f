"""kl_growth quality on synthetic traces with planted events: detection delay and false alarms.

Each shape is a noise-free mean-KL curve (per token; band 0.01–0.1, or a target in run.json)
times log-normal noise of σ 0.1, 0.3 and 0.5 on log KL, over many seeds. The engine is fed
the way a live dashboard feeds it (the rows before the event in one update, then 50 rows at a
time — verdicts do not depend on the split), and the table says:

  onset      first step the noise-free curve is above the growth level (the band's top, or
             target × 1.2) after the planted event starts: the earliest the rule may speak
  detected   seeds whose first kl_growth alert was raised at or after the onset
  step       median number of rows seen when it was raised (p90 in brackets)
  delay      step − onset, median (p90)
  eps        kl_growth episodes raised after the onset per detected seed (1.0: no flapping)
  FA/10k     kl_growth alerts raised in healthy rows (the whole of a healthy shape, the rows
             before the onset of a runaway) per 10,000 healthy rows, all seeds together

    .venv/bin/python benchmarks/bench_alert_quality.py [--seeds 20] [--sigmas 0.1 0.3 0.5]
        [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.alerts import AlertEngine, resolve_thresholds
from monitor.rules import AlertConfig

PER_TOKEN = {"name": "bench", "status": "finished", "kl": {"units": "per_token"}}
PIECE = 50  # rows per live update after the onset (one block)


class TraceRun:
    """The part of monitor.run.Run the alert engine reads, over in-memory columns (the engine
    is format-blind: what it sees from a klwatch run directory is exactly these arrays)."""

    generation = 0
    meaning = None

    def __init__(self, kl: np.ndarray, info: dict) -> None:
        n = kl.size
        self._columns = {
            "kl_mean": kl,
            "kl_max": kl * 4.0,
            "beta": np.full(n, 0.1),
            "reward_mean": np.ones(n),
        }
        self.series_names = list(self._columns)
        self.info = info
        self.n_rows = 0

    @property
    def steps(self) -> np.ndarray:
        return np.arange(self.n_rows)

    def column(self, name: str) -> np.ndarray:
        return self._columns[name][: self.n_rows]


@dataclass(frozen=True)
class Shape:
    name: str
    rows: int
    level: Callable[[np.ndarray], np.ndarray]  # noise-free mean KL at each step
    start: int | None  # where the planted runaway starts; None: healthy throughout
    info: dict | None = None
    note: str = ""


def bang_bang(rows: int, target: float, relax: float, lag: int) -> np.ndarray:
    """KL under a bang-bang β: β jumps between a weak and a strong value whenever the KL seen
    `lag` steps ago is above / below target; KL relaxes towards 4 × target (weak β) or
    target / 4 (strong β) with time constant `relax` steps. Starts from 0 (warm-up)."""
    kl = np.zeros(rows)
    for t in range(1, rows):
        seen = kl[max(0, t - 1 - lag)]
        goal = target / 4 if seen > target else 4 * target
        kl[t] = kl[t - 1] + (goal - kl[t - 1]) / relax
    return kl


Curve = Callable[[np.ndarray], np.ndarray]


def linear(base: float, rate: float, start: int = 0) -> Curve:
    return lambda t: base + rate * np.maximum(t - start, 0)


def exponential(base: float, tau: float, start: int = 0) -> Curve:
    return lambda t: base * np.exp(np.maximum(t - start, 0) / tau)


def approach(height: float, tau: float) -> Curve:
    """From ~0 towards a plateau at `height` with time constant `tau` (levels off)."""
    return lambda t: 1e-4 + height * (1 - np.exp(-t / tau))


def logistic(width: float) -> Curve:
    """0.05 → 0.6, centred on step 1000: 1–99 % within 9.2 widths, 10–90 % within 4.4."""
    return lambda t: 0.05 + 0.55 / (1 + np.exp(-(t - 1000) / width))


def ramp(t: np.ndarray) -> np.ndarray:
    """Flat at 0.06 (in the band), a straight rise to 0.5 over steps 1000–1150, flat after."""
    return np.interp(t, [0, 1000, 1150, 3000], [0.06, 0.06, 0.5, 0.5])


def sawtooth(rise: int, drop: int, low: float, high: float) -> Curve:
    """Climbs straight from `low` to `high` over `rise` steps, falls back over `drop` steps,
    after a 50-step warm-up from 0."""

    def level(t: np.ndarray) -> np.ndarray:
        phase = t % (rise + drop)
        wave = np.where(phase < rise, phase / rise, 1 - (phase - rise) / drop)
        return np.minimum(t / 50.0, 1.0) * (low + (high - low) * wave)

    return level


def sine(mean: float, factor: float, period: int) -> Curve:
    """mean ×/÷ factor, sinusoidal on the log scale."""
    return lambda t: mean * factor ** np.sin(2 * np.pi * t / period)


def bang_bang_curve(target: float, relax: float, lag: int) -> Curve:
    return lambda t: bang_bang(t.size, target, relax, lag)


def shapes() -> list[Shape]:
    target = {"name": "bench", "status": "finished", "kl": {"units": "per_token", "target": 0.05}}
    limit = "limit: see docs"
    bang = bang_bang_curve
    return [
        # -- runaways ------------------------------------------------------------------------
        Shape("linear 0.02→0.8", 400, linear(0.02, 0.78 / 400), 0, note="issue's run"),
        Shape("linear 1e-4/step from 0.02", 3000, linear(0.02, 1e-4), 0),
        Shape("linear from step 2000", 3000, linear(0.05, 0.002, 2000), 2000),
        Shape("linear from step 9000", 10000, linear(0.05, 0.002, 9000), 9000),
        Shape("exp τ=800 from 0.02", 3000, exponential(0.02, 800), 0),
        Shape("exp τ=120 from 0.02", 500, exponential(0.02, 120), 0),
        Shape("exp τ=200 from step 4000", 5000, exponential(0.05, 200, 4000), 4000),
        Shape("β=0: climb, then collapse", 500, _no_penalty, 100, note="like sample no-penalty"),
        # -- healthy: levels off, oscillates, or just noise ---------------------------------
        Shape("rise to 0.06, τ=500 (in band)", 6000, approach(0.06, 500), None),
        Shape("fast rise to 0.42, τ=40", 500, approach(0.42, 40), None, note="like sample fixed-β"),
        Shape("logistic 0.05→0.6, 1–99 % in 150", 3000, logistic(16.3), None),
        Shape("logistic 0.05→0.6, 10–90 % in 150", 3000, logistic(34.0), None, note=limit),
        Shape("ramp 0.06→0.5 in 150 steps", 3000, ramp, None),
        Shape("plateau 1.0, τ=100", 3000, approach(1.0, 100), None),
        Shape("plateau 1.0, τ=200", 3000, approach(1.0, 200), None),
        Shape("plateau 1.0, τ=400", 3000, approach(1.0, 400), None, note=limit),
        Shape("flat 0.3 (above band)", 10000, lambda t: np.full(t.size, 0.3), None),
        Shape("bang-bang, target 0.05, period 22", 10000, bang(0.05, 10, 5), None, target),
        Shape("bang-bang, target 0.05, period 111", 10000, bang(0.05, 40, 30), None, target),
        Shape("bang-bang, target 0.05, period 513", 10000, bang(0.05, 150, 150), None, target),
        Shape("bang-bang 0.18↔0.8, period 111", 10000, bang(0.3, 40, 30), None),
        Shape("bang-bang 0.16↔0.87, period 513", 10000, bang(0.3, 150, 150), None),
        Shape("sine 0.18↔0.49, period 600", 10000, sine(0.3, 1.65, 600), None),
        Shape("triangle 0.15↔0.6, period 200", 10000, sawtooth(100, 100, 0.15, 0.6), None),
        Shape("sawtooth 0.15↗0.6 in 150, ↘ in 50", 10000, sawtooth(150, 50, 0.15, 0.6), None),
    ]


def _no_penalty(t: np.ndarray) -> np.ndarray:
    """Shaped like sample_runs/no-penalty-hacking: 0 → 1.1 by step 100, a steady climb to
    ~1.75 at 350, the collapse to ~5.6 by 400, still rising."""
    t = t.astype(float)
    return np.select(
        [t < 100, t < 350, t < 400],
        [
            1e-4 + 1.1 * (t / 100) ** 2,
            1.1 + 0.0026 * (t - 100),
            1.75 + 3.85 * ((t - 350) / 50) ** 2,
        ],
        5.6 + 0.016 * (t - 400),
    )


def onset_of(shape: Shape, level: np.ndarray, growth_level: float) -> int | None:
    if shape.start is None:
        return None
    above = np.flatnonzero((np.arange(level.size) >= shape.start) & (level > growth_level))
    return int(above[0]) if above.size else None


def raised_rows(kl: np.ndarray, info: dict, live_from: int, onset: int | None) -> list[int]:
    """Rows seen when each kl_growth alert was raised: rows [0, live_from) in one update (a
    multiple of the block), then PIECE rows per update until the first alert at or after the
    onset, then the rest at once (its alerts are counted, their rows are only bounds)."""
    run, engine = TraceRun(kl, info), AlertEngine()  # reads run.info, as from run.json
    raised: list[int] = []
    cut = live_from
    while True:
        run.n_rows = cut
        raised += [cut for a in engine.update(run) if a.rule == "kl_growth"]
        if cut == kl.size:
            return raised
        detected = onset is not None and any(r >= onset for r in raised)
        cut = kl.size if detected else min(kl.size, cut + PIECE)


def evaluate(shape: Shape, sigma: float, seeds: int) -> dict:
    info = shape.info or PER_TOKEN
    growth_level = resolve_thresholds(AlertConfig(), info).growth_level
    t = np.arange(shape.rows)
    level = shape.level(t)
    onset = onset_of(shape, level, growth_level)
    healthy_rows = shape.rows if onset is None else onset
    block = AlertConfig().block_rows
    live_from = shape.rows if onset is None else max(block, (onset - 400) // block * block)
    detections, false_alarms, episodes = [], 0, 0
    for seed in range(seeds):
        noise = np.random.default_rng([seed, int(sigma * 100)]).normal(0.0, sigma, shape.rows)
        rows = raised_rows(level * np.exp(noise), info, min(live_from, shape.rows), onset)
        early = [r for r in rows if onset is None or r < onset]
        false_alarms += len(early)
        late = [r for r in rows if onset is not None and r >= onset]
        if late:
            detections.append(late[0])
            episodes += len(late)
    return {
        "onset": onset,
        "detections": detections,
        "fa_per_10k": false_alarms / max(1, healthy_rows * seeds) * 10_000,
        "healthy_rows": healthy_rows * seeds,
        "episodes": episodes / max(1, len(detections)),
    }


def _median_p90(values: list[int]) -> str:
    if not values:
        return "—"
    return f"{np.median(values):.0f} ({np.percentile(values, 90):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--only", default="", help="shapes whose name contains this")
    args = parser.parse_args()
    t0 = time.perf_counter()
    header = (
        f"{'shape':36s} {'σ':>4s} {'rows':>6s} {'onset':>6s} {'detected':>9s} "
        f"{'step':>12s} {'delay':>10s} {'eps':>4s} {'FA/10k':>7s}"
    )
    print(header)
    print("-" * len(header))
    healthy_rows, healthy_alarms = 0.0, 0.0
    for shape in [s for s in shapes() if args.only in s.name]:
        for sigma in args.sigmas:
            r = evaluate(shape, sigma, args.seeds)
            onset = r["onset"]
            found = r["detections"]
            detected = f"{len(found)}/{args.seeds}" if onset is not None else ""
            step = _median_p90(found) if onset is not None else ""
            delay = _median_p90([d - onset for d in found]) if onset is not None else ""
            eps = f"{r['episodes']:.1f}" if found else ""
            at = "" if onset is None else onset
            print(
                f"{shape.name:36s} {sigma:4.1f} {shape.rows:6d} {at:>6} "
                f"{detected:>9s} {step:>12s} {delay:>10s} {eps:>4s} {r['fa_per_10k']:7.2f}"
                + (f"   {shape.note}" if shape.note else "")
            )
            healthy_rows += r["healthy_rows"]
            healthy_alarms += r["fa_per_10k"] * r["healthy_rows"] / 10_000
    print(
        f"\nall healthy rows: {healthy_rows:,.0f}, kl_growth false alarms: {healthy_alarms:.0f} "
        f"({healthy_alarms / healthy_rows * 10_000:.3f} per 10k rows); "
        f"{args.seeds} seeds per line; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
