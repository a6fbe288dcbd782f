"""kl_growth: mean KL climbing without levelling off (docs/alerts.md, kl_growth: the tests
and why).

Judged at every block on trailing windows of min_window_rows, 2×, 4×, … max_window_rows
(150/300/600/1200; those the run has rows for), each made of `point_rows`-row medians of KL.
A window fires when KL ends above the growth level with every block above a floor, it is a
new high, its points rise (Mann–Kendall) in the whole window and in each half, the second
half climbs at least `min_slope_ratio` as fast as the first (in KL units, by `z_steady`
standard errors), the level moved accordingly, and the window half its length says its own
second half still climbs. An alert starts where one window has fired at verdicts spanning
`sustain_rows`; it holds while a window still climbs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from monitor.alerts.config import AlertConfig, GrowthConfig
from monitor.alerts.detector import LOG_FLOOR, BlockRule, Blocks, Verdict
from monitor.alerts.episodes import Episodes, Event, Tail, trailing_mean
from monitor.alerts.thresholds import Thresholds
from monitor.alerts.trend import mann_kendall_z, trailing_extreme, trailing_noise, window_evidence

# A sustain Episodes never reaches: an episode starts only where `quick` holds (one window
# fired at enough verdicts in a row), never on `on` (some window fired) alone.
NEVER = 2**62

WindowVerdicts = tuple[
    dict[int, np.ndarray], dict[int, np.ndarray], dict[int, dict[str, np.ndarray]]
]


def kl_growth(config: AlertConfig, th: Thresholds) -> BlockRule | None:
    sec = config.kl_growth
    if not sec.enabled:
        return None
    k = sec.points_per_block(config.block_rows)
    windows = sorted({config.blocks(rows) for rows in sec.window_rows()})
    lookback = config.blocks(sec.lookback_rows)
    # Verdicts in a row each window needs: its rows plus the later verdicts' span
    # sustain_rows, and never fewer than two (a ramp that fills a window fills it once).
    need = {w: max(2, 1 + config.blocks(sec.sustain_rows) - w) for w in windows}
    # Each half must rise by z_half; a half as long as two shortest windows has the power for
    # z_half_long: a flat stretch that passes z_half by chance, then a jump, must not make a
    # long window fire.
    z_halves = {w: sec.z_half_long if w >= 4 * windows[0] else sec.z_half for w in windows}
    episodes = Episodes(NEVER, config.blocks(sec.clear_rows))
    streak = dict.fromkeys(windows, 0)  # verdicts in a row each window fired, up to the last block
    m = windows[0]  # a new high is judged on the mean of the latest m blocks
    # The past a verdict reads: the longest window, and the lookback of m-block means behind
    # the latest one. Block medians and their points are kept aligned (k points per block).
    keep = max(windows) + lookback + m
    level_history, point_history = Tail(keep), Tail(keep * k)

    def judge(blocks: Blocks) -> Verdict:
        n = blocks.n
        level = level_history.extend(blocks.stats["level"])
        points = point_history.extend(sub_block_medians(blocks.rows["level"], k).ravel())
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
        log_points = np.log(np.maximum(points, LOG_FLOOR))
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
        found: dict[int, dict[str, np.ndarray]] = {}
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
            values["rows"][hit] = w * config.block_rows
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
        return Verdict(seen, values, hold=hold, quick=on)

    def message(event: Event, _blocks: Blocks, verdict: Verdict) -> str:
        i, v = event.index, verdict.values
        latest, rise, rows, ratio = v["latest"][i], v["rise"][i], int(v["rows"][i]), v["ratio"][i]
        where = f"target × {sec.over_target:g}" if th.target else "the healthy band"
        shape = "faster and faster" if ratio >= 1.5 else "steadily, without levelling off"
        return (
            f"Mean KL keeps climbing {shape} ({latest:.3g}{th.unit}, +{rise:.3g} over the last "
            f"{rows} rows, above {where}) since step {event.step}: raise β or lower the "
            "learning rate before the policy runs away."
        )

    return BlockRule("kl_growth", sec.severity, "kl_mean", episodes, judge, message)


def _growth_windows(
    level: np.ndarray,
    log_points: np.ndarray,
    ends: np.ndarray,
    windows: list[int],
    k: int,
    z_halves: dict[int, float],
    sec: GrowthConfig,
    th: Thresholds,
) -> WindowVerdicts:
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
            # Test 6 for the next (longer) window: this one's halves are not shown to level
            # off (within the noise), or its second half clearly still rises.
            recent = (slope_b - r0 * slope_a >= -sec.z_still_steady * se) | (
                z_last >= max(z_halves[w], sec.z_still_rising)
            )
    return fires, holds, found


def _streaks(fired: np.ndarray, carry: int) -> tuple[np.ndarray, int]:
    """Consecutive True values ending at each position (`carry` of them before the first),
    and the count at the end: the next batch's carry."""
    position = np.arange(1, fired.size + 1)
    last_miss = np.maximum.accumulate(np.where(fired, 0, position))
    run = position - last_miss + np.where(last_miss == 0, carry, 0)
    return run, int(run[-1]) if run.size else carry


def sub_block_medians(level: np.ndarray, parts: int) -> np.ndarray:
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
