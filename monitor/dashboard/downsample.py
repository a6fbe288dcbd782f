"""Min/max-preserving reduction of a series to a point budget, for plotting.

Why not every-Nth or averaging: both erase exactly what the KL chart exists to show — a
one-step spike in a million steps. M4 keeps, per bucket of steps, the first, the smallest,
the largest and the last point, so the drawn line touches every extreme and still joins
its neighbours where the data does (Jugel et al., "M4", VLDB 2014). The bucket reduction
runs in Rust (tsdownsample, one pass, ~2 ms for 1M points).

Non-finite values (NaN, ±Inf: a diverged step) are never chosen as a bucket's min or max —
plotly cannot draw them and they would hide the real extremes — but the first non-finite
point of each bucket is kept, so the line breaks where the data broke.
"""

from __future__ import annotations

import numpy as np
from tsdownsample import M4Downsampler

DEFAULT_BUDGET = 4000  # points per trace handed to plotly; a chart is ~1,000 px wide
_M4 = M4Downsampler()


def downsample_indices(x: np.ndarray, y: np.ndarray, budget: int = DEFAULT_BUDGET) -> np.ndarray:
    """Indices (ascending, unique) of the points to draw; at most `budget` of them.

    `x` must be ascending (steps are). Every bucket keeps its first, min, max and last
    finite point, plus its first non-finite point if it has one.
    """
    n = int(y.size)
    if x.size != n:
        raise ValueError(f"x and y differ in length ({x.size} vs {n})")
    if budget < 8:
        raise ValueError(f"budget must be at least 8 points, got {budget}")
    if n <= budget:
        return np.arange(n)
    finite = np.isfinite(y)
    has_gaps = not bool(finite.all())
    # With gaps, one point per bucket goes to the gap marker: 5 per bucket instead of 4.
    buckets = budget // 5 if has_gaps else budget // 4
    clean = np.where(finite, y, np.nan) if has_gaps else y
    picked = _M4.downsample(
        _as_x(x), np.ascontiguousarray(clean, dtype=np.float64), n_out=4 * buckets
    ).astype(np.intp)  # tsdownsample returns uint64: mixing it with int64 gives floats
    if has_gaps:
        picked = np.concatenate([picked, _first_per_bucket(x, np.flatnonzero(~finite), buckets)])
    return np.unique(picked)


def downsample(
    x: np.ndarray, y: np.ndarray, budget: int = DEFAULT_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reduced to at most `budget` points, keeping every bucket's extremes."""
    idx = downsample_indices(x, y, budget)
    return x[idx], y[idx]


def _as_x(x: np.ndarray) -> np.ndarray:
    # tsdownsample bins by x value (equal step widths), so resumed or sparse runs with
    # uneven step gaps still get buckets of equal step span, as the chart's x axis does.
    if x.dtype.kind in "iu":
        return np.ascontiguousarray(x, dtype=np.int64)
    return np.ascontiguousarray(x, dtype=np.float64)


def _first_per_bucket(x: np.ndarray, idx: np.ndarray, buckets: int) -> np.ndarray:
    """The first of `idx` in each of `buckets` equal-width step ranges (≤ buckets indices)."""
    if idx.size == 0:
        return idx
    x0, x1 = float(x[0]), float(x[-1])
    span = max(x1 - x0, 1.0)
    bucket = np.minimum(((x[idx] - x0) * buckets / span).astype(np.int64), buckets - 1)
    _, first = np.unique(bucket, return_index=True)
    return idx[first]
