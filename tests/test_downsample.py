"""monitor.dashboard.downsample: budget respected, every bucket's extremes kept, NaN-safe."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.dashboard.downsample import DEFAULT_BUDGET, downsample, downsample_indices


def _steps(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def test_short_series_is_returned_whole() -> None:
    x, y = _steps(100), np.linspace(0, 1, 100)
    idx = downsample_indices(x, y, budget=400)
    assert np.array_equal(idx, np.arange(100))


@pytest.mark.parametrize("n", [4001, 10_000, 123_457, 1_000_000])
def test_budget_respected_and_indices_sorted_unique(n: int) -> None:
    rng = np.random.default_rng(n)
    x, y = _steps(n), rng.normal(size=n)
    idx = downsample_indices(x, y)
    assert 0 < idx.size <= DEFAULT_BUDGET
    assert np.all(np.diff(idx) > 0)
    assert idx[0] == 0 and idx[-1] == n - 1  # the line spans the whole run


def test_one_step_spike_in_a_million_survives() -> None:
    n = 1_000_000
    y = np.full(n, 0.05)
    y[777_777] = 5.0  # a 100x spike at one step
    y[333_333] = -1.0  # and a dip
    xs, ys = downsample(_steps(n), y)
    assert 777_777 in xs and ys.max() == 5.0
    assert 333_333 in xs and ys.min() == -1.0


def test_global_extremes_are_always_kept() -> None:
    rng = np.random.default_rng(0)
    for n in (10_000, 100_000):
        y = rng.lognormal(size=n)
        kept = set(downsample_indices(_steps(n), y, budget=400).tolist())
        assert int(np.argmax(y)) in kept and int(np.argmin(y)) in kept


def test_every_bucket_keeps_its_max_exactly() -> None:
    # Series with one planted maximum per bucket: each must be drawn.
    n, budget = 40_000, 400
    buckets = budget // 4
    width = n // buckets
    y = np.zeros(n)
    planted = np.arange(buckets) * width + width // 3
    y[planted] = np.arange(1, buckets + 1, dtype=float)
    idx = downsample_indices(_steps(n), y, budget=budget)
    assert set(planted.tolist()) <= set(idx.tolist())


def test_nan_and_inf_are_never_extremes_but_leave_a_gap() -> None:
    n = 200_000
    y = np.sin(np.arange(n) / 1000.0)
    y[50_000] = np.nan
    y[120_000] = np.inf
    y[150_000:160_000] = np.nan  # a long diverged stretch
    y[170_000] = 3.0  # the true max of the finite values
    x = _steps(n)
    idx = downsample_indices(x, y)
    assert idx.size <= DEFAULT_BUDGET
    xs, ys = x[idx], y[idx]
    assert 170_000 in xs and np.nanmax(ys[np.isfinite(ys)]) == 3.0
    # The line breaks where the data broke: a non-finite point is kept near each gap.
    assert 50_000 in xs and 120_000 in xs
    assert np.any(~np.isfinite(ys[(xs >= 150_000) & (xs < 160_000)]))


def test_all_nan_series() -> None:
    y = np.full(50_000, np.nan)
    idx = downsample_indices(_steps(50_000), y)
    assert 0 < idx.size <= DEFAULT_BUDGET


def test_uneven_steps_and_float_x() -> None:
    x = np.concatenate([np.arange(0, 10_000), np.arange(1_000_000, 1_010_000)]).astype(np.int64)
    y = np.random.default_rng(1).normal(size=x.size)
    y[15_000] = 50.0
    xs, _ = downsample(x, y, budget=1000)
    assert xs.size <= 1000 and x[15_000] in xs
    xs_f, _ = downsample(x.astype(float), y, budget=1000)
    assert x[15_000] in xs_f


def test_rejects_mismatched_lengths_and_tiny_budgets() -> None:
    with pytest.raises(ValueError):
        downsample_indices(_steps(10), np.zeros(11))
    with pytest.raises(ValueError):
        downsample_indices(_steps(10), np.zeros(10), budget=2)
