"""Shared helpers for the benchmarks: synthetic runs and timing. Not a test."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FIELDS = ("kl_mean", "kl_max", "beta", "reward_mean", "entropy", "response_len")


def synthetic_lines(start: int, count: int, seed: int = 0) -> bytes:
    """`count` metrics.jsonl records from step `start`: 8 fields, ~200 bytes a line."""
    rng = np.random.default_rng(seed + start)
    steps = np.arange(start, start + count)
    cols = {
        "time": 1.7e9 + steps * 0.5,
        "kl_mean": rng.lognormal(-3.5, 0.3, count),
        "kl_max": rng.lognormal(-2.0, 0.3, count),
        "beta": 0.1 + steps * 1e-7,
        "reward_mean": rng.normal(size=count),
        "entropy": rng.random(count) * 3,
        "response_len": rng.integers(5, 40, count).astype(float),
    }
    # Written the way RunWriter (json.dumps) writes floats: full repr, ~17 digits, as a
    # trainer logging float32/float64 metrics produces. ~200 bytes a line.
    text = {k: [repr(float(x)) for x in v] for k, v in cols.items()}
    out = []
    for i in range(count):
        fields = ",".join(f'"{k}":{v[i]}' for k, v in text.items())
        out.append(f'{{"step":{steps[i]},{fields}}}\n')
    return "".join(out).encode()


def write_run(run_dir: Path, steps: int, chunk: int = 100_000, written_s_ago: float = 0.0) -> Path:
    """A metrics.jsonl of `steps` synthetic records (no run.json). `written_s_ago` dates the
    file back: a run without run.json counts as running while its files grew in the last
    minute, so a benchmark's "finished" runs must look written earlier."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    with open(path, "wb") as f:
        for start in range(0, steps, chunk):
            f.write(synthetic_lines(start, min(chunk, steps - start)))
    if written_s_ago:
        then = time.time() - written_s_ago
        os.utime(path, (then, then))
    return path


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def median_of(fn: Callable[[], float], repeat: int = 7) -> float:
    return statistics.median(fn() for _ in range(repeat))
