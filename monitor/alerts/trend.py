"""Trend statistics over trailing windows of a series: the evidence of the kl_growth rule.

`window_evidence` judges the windows of `n` consecutive values ending at given positions of a
1-D array, each from its own values only (integer sign counts, medians, row-wise sums in a
fixed order), so a window gives the same answer whatever stretch of history it was cut from —
the alert engine's batch-split invariance. A window with a NaN, or one that reaches before the
array's start, gives NaN.

- Mann–Kendall S: rising pairs minus falling pairs. Under "no trend" (exchangeable values, any
  distribution) its variance is n(n−1)(2n+5)/18, so its z-score has a significance level
  without a noise estimate — for the whole window and for each half.
- Half fits: least-squares slopes and means of the window's first and last halves (is the
  climb decelerating?), and a robust noise level from successive differences to judge them.

Many windows at once (a whole run checked in one go) count S lag by lag in O(len(x)) per lag;
a few (a live refresh) compare all pairs. Both give the same integers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

PAIRWISE_MAX_WINDOWS = 32  # up to this many windows (live refresh): all pairs at once
CHUNK_VALUES = 1 << 20  # bounds the temporary window matrices (values per chunk)


def window_evidence(
    x: np.ndarray, ends: np.ndarray, sizes: list[int]
) -> dict[int, dict[str, np.ndarray]]:
    """For each size n in `sizes`, per window of n values ending (inclusive) at each of `ends`:

    s, s_first, s_last   Mann–Kendall S of the window and of its first / last n // 2 values
    first, last          least-squares slopes (per position) of those halves
    first_mean, last_mean  their means
    noise                robust σ of the values (see `trailing_noise`)
    se_per_sigma         a half's slope standard error per unit of noise (a scalar array)
    """
    x = np.asarray(x, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.intp)
    out = {n: _window_fits(x, ends, n) for n in sizes}
    many = ends.size > PAIRWISE_MAX_WINDOWS
    requests = []  # (size, ends, destination): S by lag for many windows at once
    for n, ev in out.items():
        h, valid = n // 2, np.flatnonzero(ends - n + 1 >= 0)
        if h < 2 or valid.size == 0:
            continue
        if many:
            e = ends[valid]
            requests += [(n, e, ev["s"], valid), (h, e, ev["s_last"], valid)]
            requests.append((h, e - (n - h), ev["s_first"], valid))
            continue
        w = x[ends[valid, None] - n + 1 + np.arange(n)]
        signs = np.sign(w[:, None, :] - w[:, :, None])  # [p, i, j] = sign(w[j] − w[i])
        ev["s"][valid] = (signs * _upper(n)).sum(axis=(1, 2))
        ev["s_first"][valid] = (signs[:, :h, :h] * _upper(h)).sum(axis=(1, 2))
        ev["s_last"][valid] = (signs[:, n - h :, n - h :] * _upper(h)).sum(axis=(1, 2))
    if requests:
        _mann_kendall_by_lag(x, requests)
    return out


def trailing_noise(x: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Robust σ of the `n` values ending at each of `ends`: 1.4826 × MAD of their successive
    differences / √2 (a trend shifts all differences alike, so it does not count)."""
    x = np.asarray(x, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.intp)
    out = np.full(ends.size, np.nan)
    valid = np.flatnonzero(ends - n + 1 >= 0)
    chunk = max(1, CHUNK_VALUES // max(1, n))
    for c0 in range(0, valid.size, chunk):
        rows = valid[c0 : c0 + chunk]
        out[rows] = _noise(x[ends[rows, None] - n + 1 + np.arange(n)])
    return out


def _window_fits(x: np.ndarray, ends: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Everything but the S counts of `window_evidence`, for one size (S left NaN or 0)."""
    h = n // 2
    names = ("first", "last", "first_mean", "last_mean", "noise")
    out = {name: np.full(ends.size, np.nan) for name in names}
    t = np.arange(h) - (h - 1) / 2.0
    sxx = float(t @ t)
    out["se_per_sigma"] = np.full(ends.size, 1.0 / np.sqrt(sxx) if sxx > 0 else np.inf)
    valid = np.flatnonzero(ends - n + 1 >= 0)
    for name in ("s", "s_first", "s_last"):
        out[name] = np.full(ends.size, np.nan)
        out[name][valid] = 0.0
    if h < 2 or valid.size == 0:
        return out
    weights = t / sxx
    chunk = max(1, CHUNK_VALUES // n)
    for c0 in range(0, valid.size, chunk):
        rows = valid[c0 : c0 + chunk]
        w = x[ends[rows, None] - n + 1 + np.arange(n)]  # (windows, n), C-contiguous
        first, last = w[:, :h], w[:, n - h :]
        out["first"][rows] = (first * weights).sum(axis=1)
        out["last"][rows] = (last * weights).sum(axis=1)
        out["first_mean"][rows] = first.sum(axis=1) / h
        out["last_mean"][rows] = last.sum(axis=1) / h
        out["noise"][rows] = _noise(w)
    return out


def _noise(windows: np.ndarray) -> np.ndarray:
    diffs = np.diff(windows, axis=1)
    centre = np.median(diffs, axis=1)
    return 1.4826 * np.median(np.abs(diffs - centre[:, None]), axis=1) / np.sqrt(2.0)


def mann_kendall_z(s: np.ndarray, n: int) -> np.ndarray:
    """One-sided z of S for a window of `n` values (with continuity correction)."""
    sd = np.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    return (s - np.sign(s)) / sd


def trailing_extreme(x: np.ndarray, ends: np.ndarray, n: int, fn: str) -> np.ndarray:
    """min or max (`fn`) of the `n` values ending at each of `ends`; positions before the
    start of `x` and NaN values are ignored (NaN when none is left)."""
    x = np.asarray(x, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.intp)
    padded = np.concatenate((np.full(n, np.nan), x))
    index = np.maximum(ends, -1)[:, None] + 1 + np.arange(n)  # rows of `padded`
    reduce = np.fmin.reduce if fn == "min" else np.fmax.reduce
    return reduce(padded[index], axis=1) if ends.size else np.empty(0)


@lru_cache(maxsize=32)
def _upper(n: int) -> np.ndarray:
    """(n, n) mask of the pairs i < j."""
    return np.triu(np.ones((n, n)), 1)


def _mann_kendall_by_lag(x: np.ndarray, requests: list[tuple]) -> None:
    """S of many complete windows at once, added into each request's destination array:
    (size n, window ends ≥ n − 1, destination, positions in it). Per lag, one running count
    of the signs of (x[i + lag] − x[i]); O(len(x)) per lag instead of O(n²) per window.
    Counts are integers, exact in float64: the same S as the pairwise path."""
    missing = np.isnan(x)
    any_missing = bool(missing.any())
    filled = np.where(missing, 0.0, x) if any_missing else x
    for lag in range(1, max(n for n, *_ in requests)):
        if lag >= x.size:
            break
        d = np.sign(filled[lag:] - filled[:-lag])
        if any_missing:
            pair_missing = missing[lag:] | missing[:-lag]
            d[pair_missing] = 0.0
            bad = np.concatenate(([0], np.cumsum(pair_missing)))
        cumulative = np.concatenate(([0.0], np.cumsum(d)))
        for n, ends, destination, positions in requests:
            if lag >= n:
                continue
            # pairs (i, i + lag) inside the window ending at e: i ∈ [e − n + 1, e − lag]
            lo, hi = ends - n + 1, ends - lag + 1
            destination[positions] += cumulative[hi] - cumulative[lo]
            if any_missing:  # a window with a NaN gives NaN
                destination[positions[bad[hi] - bad[lo] > 0]] = np.nan
