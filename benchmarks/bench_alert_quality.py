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

A second section (run by default; `--health` runs only it, `--no-health` skips it) does the
same for the health rules — entropy_collapse, no_learning_signal, completions_truncated,
grad_spike, rollout_mismatch — and the evidence-based kl_high / kl_low: planted problems
(caught / seeds and the delay from the onset, the first step the noise-free series is past
the rule's limit) and healthy shapes (the rule's alarms per 10k rows), at three noise levels
(log-normal σ 0.1 / 0.3 / 0.5 for positive series, binomial shares of 16 / 8 / 4 groups or
completions). Shapes: benchmarks/_health_shapes.py. It then lists every miss, false alarm,
flapping detection and alert of another rule, with a message. `--sigmas` is kl_growth's only.

    .venv/bin/python benchmarks/bench_alert_quality.py [--seeds 20] [--sigmas 0.1 0.3 0.5]
        [--only SUBSTRING] [--health | --no-health]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._health_shapes import LEVELS, HealthShape, Noise, health_shapes
from monitor.alerts import AlertEngine, resolve_thresholds
from monitor.alerts.config import AlertConfig

PER_TOKEN = {"name": "bench", "status": "finished", "kl": {"units": "per_token"}}
PIECE = 50  # rows per live update after the onset (one block)


class TraceRun:
    """The part of monitor.run.Run the alert engine reads, over in-memory columns (the engine
    is format-blind: what it sees from a klwatch run directory is exactly these arrays)."""

    generation = 0
    meaning = None

    def __init__(self, kl: np.ndarray, info: dict, extra: dict[str, np.ndarray] | None = None):
        n = kl.size
        self._columns = {
            "kl_mean": kl,
            "kl_max": kl * 4.0,
            "beta": np.full(n, 0.1),
            "reward_mean": np.ones(n),
            **(extra or {}),  # more logged series (the health section: entropy, grad_norm, …)
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


# -- health section: entropy_collapse, no_learning_signal, completions_truncated, grad_spike,
# rollout_mismatch, kl_high / kl_low (shapes: benchmarks/_health_shapes.py) -------------------

CHUNK = 10  # rows per update after a planted onset; the chunk that raises is replayed row by row
QUIET_KL = 0.03  # per-token mean KL of the shapes that do not plant one: in the band


@dataclass
class HealthResult:
    delays: list[int] = field(default_factory=list)  # per caught seed: raised row − onset
    episodes: int = 0  # episodes of the rule raised from the start on, caught seeds
    alarms: int = 0  # the rule's alerts on healthy rows (a planted shape's: before the start)
    healthy_rows: int = 0
    others: Counter[str] = field(default_factory=Counter)  # alerts of other rules, by rule
    messages: dict[str, str] = field(default_factory=dict)  # one message per rule that alarmed


def health_columns(shape: HealthShape, noise: Noise, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng([seed, LEVELS.index(noise), zlib.crc32(shape.name.encode())])
    t = np.arange(shape.rows)
    columns = shape.series(t, noise, rng)
    kl = columns.pop("kl_mean", None)
    if kl is None:
        kl = QUIET_KL * np.exp(rng.normal(0.0, 0.1, shape.rows))
    return kl, columns


def health_alerts(shape: HealthShape, noise: Noise, seed: int) -> tuple[list, int | None]:
    """Every alert of one seed, each with the row (0-based) whose arrival raised it, and the
    row of the detection: the rule's first alert raised at or after the planted event's start
    (None: missed, or a healthy shape). The rows before the start arrive in one update, then
    CHUNK rows at a time until the rule speaks (the chunk that raised it is fed again row by
    row from a copy of the engine, so the row is exact), then the rest at once."""
    kl, extra = health_columns(shape, noise, seed)
    run, engine = TraceRun(kl, PER_TOKEN, extra), AlertEngine()
    n = shape.rows

    def is_detection(a) -> bool:
        if shape.spike is not None:  # a row rule: raised by the spike row itself
            return a.rule == shape.rule and abs(a.step - shape.spike) <= 2
        return a.rule == shape.rule

    def feed(rows: int) -> list:
        run.n_rows = rows
        return engine.update(run)

    if not shape.planted or shape.spike is not None:
        # One update: healthy rows are judged whatever the split; a spike is raised at its row.
        found = [(a, a.step) for a in feed(n)]
        hit = next((row for a, row in found if is_detection(a)), None)
        return found, hit
    assert shape.start is not None
    found = [(a, shape.start - 1) for a in feed(shape.start)] if shape.start else []
    cut, hit = shape.start, None
    while cut < n and hit is None:
        saved, stop = copy.deepcopy(engine), min(n, cut + CHUNK)
        fresh = feed(stop)
        if any(is_detection(a) for a in fresh):
            engine = saved
            for row in range(cut + 1, stop + 1):
                fresh = feed(row)
                found += [(a, row - 1) for a in fresh]
                if any(is_detection(a) for a in fresh):
                    hit, stop = row - 1, row
                    break
        else:
            found += [(a, stop - 1) for a in fresh]
        cut = stop
    if cut < n:
        found += [(a, n - 1) for a in feed(n)]
    return found, hit


def evaluate_health(shape: HealthShape, noise: Noise, seeds: int) -> HealthResult:
    r = HealthResult()
    for seed in range(seeds):
        found, hit = health_alerts(shape, noise, seed)
        start, spike = shape.start, shape.spike
        for a, row in found:
            if a.rule != shape.rule:
                r.others[a.rule] += 1
                r.messages.setdefault(a.rule, a.message)
            elif spike is not None and abs(a.step - spike) <= 2:
                r.episodes += 1
            elif spike is not None or start is None or row < start:
                r.alarms += 1
                r.messages.setdefault(a.rule, a.message)
            else:
                r.episodes += 1
        if hit is not None:
            r.delays.append(hit - (shape.onset or 0))
        # healthy rows: all of a healthy shape, the rows before a planted start (a spike's
        # run but the 5 rows around it)
        r.healthy_rows += shape.rows if start is None else (shape.rows - 5 if spike else start)
    return r


def health_section(seeds: int, only: str) -> None:
    t0 = time.perf_counter()
    chosen = [s for s in health_shapes() if only in s.name or only == s.rule]
    if not chosen:
        return
    print(
        "\nHealth rules: planted problems — caught (the rule raised at or after the event's "
        "start) / seeds, and delay: the row that raised it − onset (the first step the "
        "noise-free series is past the rule's limit; < 0: spoke before), median (p90); "
        "healthy shapes — the rule's alarms per 10k rows.\n"
        "Noise: " + ", ".join(level.label for level in LEVELS) + " — σ on the log scale of "
        "positive series, n: groups / completions behind each share (binomial)."
    )
    cell = 22
    header = f"{'shape':44s} {'rule':22s} {'onset':>5s} " + " ".join(
        f"{level.name:>{cell}s}" for level in LEVELS
    )
    findings: list[str] = []
    total_rows, total_alarms = 0, 0
    for planted in (True, False):
        print("\n" + ("planted problems" if planted else "healthy shapes (alarms per 10k rows)"))
        print(header)
        print("-" * len(header))
        for shape in [s for s in chosen if s.planted == planted]:
            cells: list[str] = []
            others: dict[str, dict[str, Any]] = {}  # rule -> alerts per level, a message
            for level in LEVELS:
                r = evaluate_health(shape, level, seeds)
                fa = r.alarms / max(1, r.healthy_rows) * 10_000
                total_rows += r.healthy_rows
                total_alarms += r.alarms
                where = f"{shape.name}, {level.label}"
                if planted:
                    caught = len(r.delays)
                    cells.append(
                        f"{caught:2d}/{seeds} {_median_p90(r.delays):>10s}"
                        + ("*" if r.alarms else " ")
                    )
                    if caught < seeds:
                        findings.append(f"MISSED {shape.rule}: {where}: caught {caught}/{seeds}")
                    eps = r.episodes / max(1, caught)
                    if caught and eps > 1.5:
                        findings.append(
                            f"FLAPS {shape.rule}: {where}: {eps:.1f} episodes per caught seed"
                        )
                else:
                    cells.append(f"{fa:.2f}")
                if r.alarms:
                    findings.append(
                        f"FALSE ALARM {shape.rule}: {where}: {r.alarms} in {r.healthy_rows:,} "
                        f"healthy rows ({fa:.2f}/10k) — “{r.messages[shape.rule]}”"
                    )
                for rule, count in r.others.items():
                    others.setdefault(rule, {"message": r.messages[rule]})[level.name] = count
            for rule, seen in sorted(others.items()):
                per_seed = "/".join(f"{seen.get(level.name, 0) / seeds:.2f}" for level in LEVELS)
                findings.append(
                    f"also {rule}: {shape.name}: {per_seed} per seed (low/medium/high) — "
                    f"e.g. “{seen['message']}”"
                )
            onset = "" if shape.onset is None else str(shape.onset)
            print(
                f"{shape.name:44s} {shape.rule:22s} {onset:>5s} "
                + " ".join(f"{c:>{cell}s}" for c in cells)
                + (f"   {shape.note}" if shape.note else "")
            )
    print(
        "\n* the rule also alarmed before the event started (see below).  "
        f"All healthy rows: {total_rows:,}, the shapes' rules alarmed {total_alarms} times "
        f"({total_alarms / max(1, total_rows) * 10_000:.3f} per 10k rows); {seeds} seeds per "
        f"cell; {time.perf_counter() - t0:.0f} s"
    )
    if findings:
        print("\nMisses, flapping, false alarms, and alerts of other rules on these traces:")
        for line in findings:
            print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument(
        "--only",
        default="",
        help="shapes whose name contains this (or, in the health section, whose rule is this)",
    )
    section = parser.add_mutually_exclusive_group()
    section.add_argument("--health", action="store_true", help="only the health section")
    section.add_argument("--no-health", action="store_true", help="only kl_growth")
    args = parser.parse_args()
    if not args.health:
        growth_section(args)
    if not args.no_health:
        health_section(args.seeds, args.only)


def growth_section(args: argparse.Namespace) -> None:
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
        f"({healthy_alarms / max(1.0, healthy_rows) * 10_000:.3f} per 10k rows); "
        f"{args.seeds} seeds per line; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
