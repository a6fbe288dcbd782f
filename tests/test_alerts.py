"""Detectors held to synthetic traces (seeded numpy): each rule fires when it should and
stays quiet when it should not; verdicts do not depend on how rows arrive."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from monitor import Alert, AlertConfig, AlertEngine, RunWriter, check_run, load_run, open_run

HEALTHY_INFO = {"name": "t", "status": "finished", "kl": {"units": "per_token"}}


# -- trace helpers (also used by test_cli.py) -------------------------------------------------


def metrics_lines(steps: np.ndarray, columns: dict[str, np.ndarray]) -> str:
    """metrics.jsonl text; NaN/±inf as Python's json writes them (bare tokens)."""
    names = list(columns)
    lines = []
    for i, step in enumerate(steps.tolist()):
        record = {"step": int(step), "time": 1000.0 + i}
        record.update({n: float(columns[n][i]) for n in names})
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n" if lines else ""


def trace(kl_mean: np.ndarray, **extra: np.ndarray) -> dict[str, np.ndarray]:
    """The required series around a kl_mean trace; kl_max, β and reward get quiet defaults."""
    n = kl_mean.size
    columns = {
        "kl_mean": kl_mean,
        "kl_max": extra.pop("kl_max", np.abs(kl_mean) * 4),
        "beta": extra.pop("beta", np.full(n, 0.1)),
        "reward_mean": extra.pop("reward_mean", np.full(n, 1.0)),
    }
    columns.update(extra)
    return columns


def write_run(
    directory: Path,
    columns: dict[str, np.ndarray],
    info: dict | None = None,
    steps: np.ndarray | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    n = next(iter(columns.values())).size
    steps = np.arange(n) if steps is None else steps
    (directory / "metrics.jsonl").write_text(metrics_lines(steps, columns))
    (directory / "run.json").write_text(json.dumps(info or HEALTHY_INFO))
    return directory


def alerts_for(
    tmp_path: Path,
    columns: dict[str, np.ndarray],
    info: dict | None = None,
    config: AlertConfig | None = None,
) -> list[Alert]:
    run = load_run(write_run(tmp_path / "run", columns, info))
    engine = AlertEngine(config)
    engine.update(run)
    return engine.alerts


def rules(alerts: list[Alert]) -> list[str]:
    return [a.rule for a in alerts]


def detection_rows(
    tmp_path: Path, columns: dict[str, np.ndarray], piece: int = 50, info: dict | None = None
) -> dict[str, tuple[int, int]]:
    """Feed the run `piece` rows at a time through a live Run: rule -> (step, rows seen when
    it was raised), first episode of each rule."""
    directory = write_run(tmp_path / "live", {k: v[:0] for k, v in columns.items()}, info)
    n = next(iter(columns.values())).size
    run, engine = open_run(directory), AlertEngine()
    raised: dict[str, tuple[int, int]] = {}
    with open(directory / "metrics.jsonl", "a") as f:
        for start in range(0, n, piece):
            rows = slice(start, min(n, start + piece))
            f.write(metrics_lines(np.arange(n)[rows], {k: v[rows] for k, v in columns.items()}))
            f.flush()
            run.refresh()
            for alert in engine.update(run):
                raised.setdefault(alert.rule, (alert.step, run.n_rows))
    return raised


def noisy(level: np.ndarray | float, sigma: float, n: int, seed: int) -> np.ndarray:
    """`level` times log-normal noise of σ `sigma` in log space."""
    return level * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


# -- kl_spike ---------------------------------------------------------------------------------


def test_ten_fold_kl_max_spike_is_flagged_at_its_step(tmp_path: Path) -> None:
    kl_max = noisy(0.2, 0.3, 3000, seed=1)
    kl_max[2000] = np.median(kl_max[1750:2000]) * 10
    alerts = alerts_for(tmp_path, trace(noisy(0.05, 0.1, 3000, seed=2), kl_max=kl_max))
    assert rules(alerts) == ["kl_spike"]
    (spike,) = alerts
    assert (spike.step, spike.metric, spike.severity) == (2000, "kl_max", "warning")
    assert spike.value == pytest.approx(kl_max[2000])
    assert spike.end_step is not None and spike.end_step > 2000  # it cleared
    assert "step 2000" in spike.message and "10×" in spike.message


def test_kl_mean_spike_is_flagged_too(tmp_path: Path) -> None:
    kl_mean = noisy(0.05, 0.1, 1000, seed=3)
    kl_mean[700] = 0.8
    alerts = alerts_for(tmp_path, trace(kl_mean, kl_max=noisy(0.9, 0.1, 1000, seed=4)))
    assert [(a.rule, a.step, a.metric) for a in alerts] == [("kl_spike", 700, "kl_mean")]


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_heavy_log_normal_noise_gives_no_spike(tmp_path: Path, seed: int) -> None:
    n = 10_000
    columns = trace(noisy(0.05, 0.5, n, seed), kl_max=noisy(0.2, 0.5, n, seed + 100))
    assert "kl_spike" not in rules(alerts_for(tmp_path, columns))


def test_smooth_fast_rise_is_not_a_spike(tmp_path: Path) -> None:
    t = np.arange(3000)
    kl = 1e-4 * np.exp(t / 300).clip(max=500)  # from 1e-4 to 0.05: steep but smooth
    assert "kl_spike" not in rules(alerts_for(tmp_path, trace(kl, kl_max=kl * 4)))


def test_resume_with_steps_jumping_back_is_not_a_spike(tmp_path: Path) -> None:
    # First attempt runs to step 1999 with KL climbing to a crash; resumed from the step-1000
    # checkpoint at the step-1000 level. The superseded rows must not serve as a reference.
    first = np.concatenate([noisy(0.03, 0.1, 1000, 8), np.geomspace(0.03, 5.0, 1000)])
    second = noisy(0.03, 0.1, 1000, 9)
    steps = np.concatenate([np.arange(2000), np.arange(1000, 2000)])
    kl = np.concatenate([first, second])
    directory = write_run(tmp_path / "r", trace(kl), steps=steps)
    run = load_run(directory)
    assert run.n_rows == 2000
    once = AlertEngine()
    once.update(run)
    assert once.alerts == []

    # Live: the engine saw the crash, then the resume rewrote the rows — it starts over.
    live_dir = write_run(tmp_path / "live", trace(first))
    live, engine = load_run(live_dir), AlertEngine()
    assert "kl_spike" in rules(engine.update(live)) or "kl_high" in rules(engine.alerts)
    with open(live_dir / "metrics.jsonl", "a") as f:
        f.write(metrics_lines(np.arange(1000, 2000), trace(second)))
    live.refresh()
    assert engine.update(live) == []
    assert engine.alerts == []


# -- kl_growth --------------------------------------------------------------------------------


def test_linear_runaway_is_flagged_soon_after_leaving_the_band(tmp_path: Path) -> None:
    t = np.arange(3000)
    kl = noisy(0.02 + 1e-4 * t, 0.1, 3000, seed=10)  # leaves the band (0.1) at step 800
    raised = detection_rows(tmp_path, trace(kl))
    assert "kl_growth" in raised
    assert raised["kl_growth"][1] - 800 <= 500
    growth = next(a for a in alerts_for(tmp_path, trace(kl)) if a.rule == "kl_growth")
    assert growth.severity == "critical" and growth.end_step is None


def test_exponential_runaway_is_flagged_soon_after_leaving_the_band(tmp_path: Path) -> None:
    t = np.arange(3000)
    kl = noisy(0.02 * np.exp(t / 800), 0.1, 3000, seed=11)  # leaves the band at step ~1288
    raised = detection_rows(tmp_path, trace(kl))
    assert raised["kl_growth"][1] - 1288 <= 400


def test_beta_zero_run_climbing_steadily_is_flagged(tmp_path: Path) -> None:
    t = np.arange(6000)
    kl = noisy(0.002 + 3e-5 * t, 0.15, 6000, seed=12)  # leaves the band at step ~3270
    columns = trace(kl, beta=np.zeros(6000))
    info = {**HEALTHY_INFO, "kl": {"units": "per_token", "controller": "none"}}
    raised = detection_rows(tmp_path, columns, info=info)
    assert raised["kl_growth"][1] - 3270 <= 600


@pytest.mark.parametrize("seed", [13, 14])
def test_rise_then_plateau_inside_the_band_gives_no_alert(tmp_path: Path, seed: int) -> None:
    t = np.arange(6000)
    kl = noisy(1e-4 + 0.06 * (1 - np.exp(-t / 500)), 0.15, 6000, seed)
    reward = 1 - np.exp(-t / 800)
    assert alerts_for(tmp_path, trace(kl, reward_mean=reward)) == []


def test_plateau_just_above_the_band_is_high_but_not_growth(tmp_path: Path) -> None:
    t = np.arange(5000)
    kl = noisy(1e-4 + 0.15 * (1 - np.exp(-t / 400)), 0.1, 5000, seed=15)
    assert rules(alerts_for(tmp_path, trace(kl))) == ["kl_high"]


def no_penalty_shape(seed: int) -> np.ndarray:
    """Shaped like sample_runs/no-penalty-hacking (β = 0, 500 steps, per token): 0 → 1.1 by
    step 100, a steady climb to ~1.75 at 350, the collapse to ~5.6 by 400, still rising to
    ~7.2 at 499."""
    t = np.arange(500, dtype=float)
    level = np.select(
        [t < 100, t < 350, t < 400],
        [
            1e-4 + 1.1 * (t / 100) ** 2,
            1.1 + 0.0026 * (t - 100),
            1.75 + 3.85 * ((t - 350) / 50) ** 2,
        ],
        5.6 + 0.016 * (t - 400),
    )
    return noisy(level, 0.15, 500, seed)


@pytest.mark.parametrize("seed", [35, 36, 37])
def test_short_no_penalty_run_is_flagged_within_its_500_steps(tmp_path: Path, seed: int) -> None:
    columns = trace(no_penalty_shape(seed), beta=np.zeros(500))
    raised = detection_rows(tmp_path, columns)
    assert "kl_growth" in raised and raised["kl_growth"][1] <= 450
    (growth,) = [a for a in alerts_for(tmp_path, columns) if a.rule == "kl_growth"]
    assert growth.severity == "critical" and growth.end_step is None
    assert "faster and faster" in growth.message


def test_fast_exponential_runaway_in_a_short_run(tmp_path: Path) -> None:
    t = np.arange(500)
    kl = noisy(0.02 * np.exp(t / 120), 0.15, 500, seed=38)  # leaves the band at step ~193
    raised = detection_rows(tmp_path, trace(kl))
    # Four 50-row segments all above the band, then one to judge: ~250 rows at best.
    assert raised["kl_growth"][1] - 193 <= 300


@pytest.mark.parametrize("seed", [39, 40])
def test_short_rise_then_plateau_above_the_band_is_high_not_growth(
    tmp_path: Path, seed: int
) -> None:
    # Shaped like sample_runs/fixed-beta: 0 → 0.42 per token within ~200 steps, then flat.
    t = np.arange(500)
    kl = noisy(1e-4 + 0.42 * (1 - np.exp(-t / 60)), 0.15, 500, seed)
    assert rules(alerts_for(tmp_path, trace(kl))) == ["kl_high"]


# τ = 400 is past the documented limit (docs/alerts.md, kl_growth): 0.1 → 0.5 over its first
# 300 steps is a steady climb at the scale where a runaway must be flagged.
@pytest.mark.parametrize("tau", [100, 200])
def test_approach_to_a_high_plateau_is_not_growth(tmp_path: Path, tau: int) -> None:
    t = np.arange(3000)
    kl = noisy(1e-4 + 1.0 * (1 - np.exp(-t / tau)), 0.3, 3000, seed=tau)
    assert "kl_growth" not in rules(alerts_for(tmp_path, trace(kl)))


@pytest.mark.parametrize(("level", "seed"), [(0.3, 41), (0.3, 42), (2.0, 43)])
def test_heavy_noise_above_the_band_is_not_growth(tmp_path: Path, level: float, seed: int) -> None:
    kl = noisy(level, 0.5, 10_000, seed)
    found = rules(alerts_for(tmp_path, trace(kl, kl_max=noisy(level * 4, 0.5, 10_000, seed + 1))))
    assert "kl_growth" not in found and "kl_high" in found


# -- kl_high / kl_low -------------------------------------------------------------------------


def test_kl_high_needs_a_sustained_stretch(tmp_path: Path) -> None:
    kl = noisy(0.05, 0.05, 3000, seed=16)
    kl[1000:1040] *= 4  # 40 rows at 2× the band's top: an excursion (and a spike), not a state
    assert "kl_high" not in rules(alerts_for(tmp_path, trace(kl)))
    kl[2000:2600] *= 4
    alerts = [a for a in alerts_for(tmp_path, trace(kl)) if a.rule != "kl_spike"]
    assert [(a.rule, a.step, a.end_step) for a in alerts] == [("kl_high", 2000, 2600)]


def test_kl_low_fires_only_after_warmup(tmp_path: Path) -> None:
    t = np.arange(4000)
    # Low only while warming up (reaches 0.01 at step ~290; the sample runs enter the band
    # by step ~100): fine.
    warming = np.minimum(0.001 * 1.008**t, 0.05)
    assert alerts_for(tmp_path, trace(noisy(warming, 0.1, 4000, 17))) == []
    stuck = noisy(0.002, 0.1, 4000, 18)  # β too strong: KL never moves
    (low,) = alerts_for(tmp_path, trace(stuck))
    assert (low.rule, low.step, low.severity) == ("kl_low", 150, "info")


def test_kl_low_is_seen_within_a_short_run(tmp_path: Path) -> None:
    # 500 steps at 0.006 per token (the beta-too-high sample run): seen by row 350 (a fixed
    # 250-row wait saw it at row 400).
    raised = detection_rows(tmp_path, trace(noisy(0.006, 0.3, 500, seed=34)))
    assert raised == {"kl_low": (150, 350)}


# -- kl_negative / kl_nonfinite ---------------------------------------------------------------


def test_sustained_negative_kl_estimate(tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    ok = 0.02 + rng.normal(0, 0.05, 3000)  # k1 noise dips below zero, the mean does not
    assert "kl_negative" not in rules(alerts_for(tmp_path, trace(ok)))
    bad = ok.copy()
    bad[1500:] = -0.02 + rng.normal(0, 0.02, 1500)
    alerts = [a for a in alerts_for(tmp_path, trace(bad)) if a.rule == "kl_negative"]
    assert [a.step for a in alerts] == [1500]
    assert "generation settings" in alerts[0].message


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
def test_nonfinite_kl_is_critical_at_its_own_step(tmp_path: Path, bad_value: float) -> None:
    kl = noisy(0.05, 0.1, 2000, seed=20)
    kl_max = kl * 4
    kl_max[1234] = bad_value
    (alert,) = alerts_for(tmp_path, trace(kl, kl_max=kl_max))
    assert (alert.rule, alert.step, alert.severity, alert.metric) == (
        "kl_nonfinite",
        1234,
        "critical",
        "kl_max",
    )
    assert alert.to_dict()["value"] is None  # JSON has no NaN or Infinity


def test_a_series_never_logged_is_not_nonfinite(tmp_path: Path) -> None:
    columns = trace(noisy(0.05, 0.1, 1000, seed=31))
    del columns["kl_max"]
    assert alerts_for(tmp_path, columns) == []


def test_nan_value_becomes_null_in_json() -> None:
    alert = Alert("kl_nonfinite", "critical", 3, None, "kl_mean", math.nan, "x")
    assert json.loads(json.dumps(alert.to_dict(), allow_nan=False))["value"] is None


# -- beta_saturated ---------------------------------------------------------------------------


ADAPTIVE = {
    "name": "a",
    "status": "finished",
    "kl": {"units": "per_token", "controller": "adaptive", "target": 0.05},
    "config": {"kl_controller": "adaptive", "target_kl": 0.05, "beta_max": 2.0},
}


def test_beta_pinned_at_its_bound_while_kl_off_target(tmp_path: Path) -> None:
    kl = noisy(0.05, 0.1, 2000, seed=21)
    beta = np.full(2000, 0.3)
    kl[1000:], beta[1000:] = 0.2, 2.0  # β at run.json's beta_max, KL still 4× target
    alerts = alerts_for(tmp_path, trace(kl, beta=beta), info=ADAPTIVE)
    sat = [a for a in alerts if a.rule == "beta_saturated"]
    assert [(a.step, a.metric, a.value) for a in sat] == [(1000, "beta", 2.0)]
    assert "upper bound" in sat[0].message


def test_beta_at_bound_with_kl_on_target_or_fixed_controller_is_fine(tmp_path: Path) -> None:
    kl = noisy(0.05, 0.1, 2000, seed=22)
    assert alerts_for(tmp_path, trace(kl, beta=np.full(2000, 2.0)), info=ADAPTIVE) == []
    fixed = {**ADAPTIVE, "kl": {**ADAPTIVE["kl"], "controller": "fixed"}, "config": {}}
    kl[500:] = 0.2
    alerts = alerts_for(tmp_path, trace(kl, beta=np.full(2000, 2.0)), info=fixed)
    assert "beta_saturated" not in rules(alerts)


def test_beta_pinned_at_lower_bound_while_kl_stays_low(tmp_path: Path) -> None:
    kl = noisy(0.05, 0.1, 3000, seed=32)
    beta = np.full(3000, 0.3)
    kl[1500:], beta[1500:] = 0.005, 0.01  # β at the default beta_min, KL far below target
    sat = [
        a
        for a in alerts_for(tmp_path, trace(kl, beta=beta), info=ADAPTIVE)
        if a.rule == "beta_saturated"
    ]
    assert [a.step for a in sat] == [1500] and "lower bound" in sat[0].message


def test_growth_past_the_target_counts_even_inside_the_default_band(tmp_path: Path) -> None:
    t = np.arange(3000)
    kl = noisy(0.01 + 3e-5 * t, 0.1, 3000, seed=33)  # 0.01 → 0.1: inside the seed's band
    assert "kl_growth" not in rules(alerts_for(tmp_path, trace(kl)))
    info = {**HEALTHY_INFO, "kl": {"units": "per_token", "target": 0.03}}
    growth = [a for a in alerts_for(tmp_path, trace(kl), info=info) if a.rule == "kl_growth"]
    assert len(growth) == 1 and "target" in growth[0].message


# -- reward_hacking ---------------------------------------------------------------------------


def test_reward_rising_while_kl_grows_faster(tmp_path: Path) -> None:
    t = np.arange(3000)
    kl = noisy(0.02 * np.exp(t / 700), 0.05, 3000, seed=23)
    reward = 1.0 + t / 3000  # +0.33 %/… : slower than KL
    hack = [
        a for a in alerts_for(tmp_path, trace(kl, reward_mean=reward)) if a.rule == "reward_hacking"
    ]
    assert len(hack) == 1 and hack[0].severity == "warning"
    calm = noisy(0.05, 0.05, 3000, seed=24)  # reward rises, KL bounded: the best runs
    assert alerts_for(tmp_path, trace(calm, reward_mean=reward)) == []


# -- run_stalled ------------------------------------------------------------------------------


def _stall_run(tmp_path: Path, close: bool) -> tuple[Path, float]:
    clock = iter(np.arange(5000.0, 5000.0 + 2 * 100, 2.0).tolist() + [9e9] * 10)
    writer = RunWriter(tmp_path / "s", {"kl_units": "per_token"}, clock=lambda: next(clock))
    for step in range(50):
        writer.log(step, kl_mean=0.05, kl_max=0.2, beta=0.1, reward_mean=1.0)
    if close:
        writer.close()
    written = (tmp_path / "s" / "metrics.jsonl").stat().st_mtime
    return tmp_path / "s", written


def test_running_run_silent_for_long_is_stalled(tmp_path: Path) -> None:
    directory, written = _stall_run(tmp_path, close=False)
    run = load_run(directory)
    engine = AlertEngine()
    engine.update(run)
    assert engine.check_stall(run, now=written + 30) is None  # 20 × 2 s < 60 s minimum
    stall = engine.check_stall(run, now=written + 3600)
    assert stall is not None and stall.rule == "run_stalled" and stall.step == 49
    assert stall.value == pytest.approx(3600, abs=1)
    assert engine.alerts == [stall]
    assert check_run(run, now=written + 3600)[-1].rule == "run_stalled"


def test_finished_run_is_never_stalled(tmp_path: Path) -> None:
    directory, written = _stall_run(tmp_path, close=True)
    run = load_run(directory)
    assert AlertEngine().check_stall(run, now=written + 10**6) is None


# -- units and targets ------------------------------------------------------------------------


def test_per_sequence_kl_is_scaled_by_response_length(tmp_path: Path) -> None:
    per_token = noisy(0.05, 0.1, 2000, seed=25)
    length = np.full(2000, 200.0)
    info = {**HEALTHY_INFO, "kl": {"units": "per_sequence"}}
    columns = trace(per_token * length, response_len=length)
    assert alerts_for(tmp_path, columns, info=info) == []
    # Without the column the configured typical length (128) is used: 0.05 × 200 / 128 is
    # still in band; a per-token reading of the same numbers would be far above it.
    assert alerts_for(tmp_path, trace(per_token * length), info=info) == []
    assert "kl_high" in rules(alerts_for(tmp_path, trace(per_token * length)))


def test_band_follows_target_kl(tmp_path: Path) -> None:
    info = {**HEALTHY_INFO, "kl": {"units": "per_sequence", "target": 6.0}}
    on_target = noisy(6.0, 0.1, 2000, seed=26)
    assert alerts_for(tmp_path, trace(on_target), info=info) == []
    (high,) = alerts_for(tmp_path, trace(on_target * 3), info=info)
    assert high.rule == "kl_high" and "12" in high.message


# -- streaming --------------------------------------------------------------------------------


def eventful_trace(n: int = 6000) -> dict[str, np.ndarray]:
    """One trace with something for most rules: spike, NaN, negative stretch, runaway;
    the first `n` of 6000 rows."""
    full = _eventful_trace()
    return {k: v[:n] for k, v in full.items()}


def _eventful_trace(n: int = 6000) -> dict[str, np.ndarray]:
    t = np.arange(n)
    kl = noisy(0.04, 0.15, n, seed=27)
    kl[1500:2100] = -0.02 + np.random.default_rng(28).normal(0, 0.01, 600)
    kl[4000:] = noisy(0.04 * np.exp((t[4000:] - 4000) / 500), 0.1, n - 4000, seed=29)
    kl_max = np.abs(kl) * 4
    kl_max[1000] *= 20
    kl_max[3333] = math.nan
    return trace(kl, kl_max=kl_max, reward_mean=1 + t / n)


def test_same_alerts_however_rows_are_split(tmp_path: Path) -> None:
    columns = eventful_trace()
    whole = alerts_for(tmp_path, columns)
    assert {"kl_spike", "kl_nonfinite", "kl_negative", "kl_growth"} <= set(rules(whole))
    assert_split_invariant(tmp_path, columns, whole, [5, 40, 300], seed=30)


def assert_split_invariant(
    tmp_path: Path,
    columns: dict[str, np.ndarray],
    whole: list[Alert],
    cut_counts: list[int],
    seed: int,
) -> None:
    """Write the trace in pieces cut at random rows, refreshing and updating one engine after
    each: the alerts must equal the one-shot `whole`, each episode reported exactly once."""
    n = columns["kl_mean"].size
    rng = np.random.default_rng(seed)
    for trial, count in enumerate(cut_counts):
        cuts = np.sort(rng.choice(np.arange(1, n), size=count, replace=False))
        directory = write_run(tmp_path / f"split{trial}", {k: v[:0] for k, v in columns.items()})
        run, engine = open_run(directory), AlertEngine()
        raised = []
        with open(directory / "metrics.jsonl", "a") as f:
            for a, b in zip([0, *cuts], [*cuts, n], strict=True):
                f.write(metrics_lines(np.arange(a, b), {k: v[a:b] for k, v in columns.items()}))
                f.flush()
                run.refresh()
                raised += engine.update(run)
        assert [a.to_dict() for a in engine.alerts] == [a.to_dict() for a in whole], trial
        # Each episode is reported exactly once, in whichever update decided it.
        assert sorted((a.step, a.rule) for a in raised) == sorted((a.step, a.rule) for a in whole)


def test_replaced_file_starts_over_without_repeating_alerts(tmp_path: Path) -> None:
    columns = eventful_trace(3000)
    directory = write_run(tmp_path / "r", columns)
    run, engine = load_run(directory), AlertEngine()
    first = engine.update(run)
    assert first
    os.replace(write_run(tmp_path / "copy", columns) / "metrics.jsonl", directory / "metrics.jsonl")
    run.refresh()
    assert engine.update(run) == []  # same episodes again: not news
    assert [a.to_dict() for a in engine.alerts] == [a.to_dict() for a in first]


def test_update_without_new_rows_is_a_no_op(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", eventful_trace(2000)))
    engine = AlertEngine()
    engine.update(run)
    before = engine.alerts
    assert engine.update(run) == [] and engine.alerts == before


def test_early_rise_from_near_zero_is_not_a_spike(tmp_path: Path) -> None:
    # Seen on a real run: KL ~1e-8 for the first steps, then a normal rise to ~0.01.
    rng = np.random.default_rng(7)
    kl = np.concatenate([np.full(300, 1e-8), 0.0101 * rng.lognormal(0, 0.05, 300)])
    alerts = alerts_for(tmp_path, trace(kl, kl_max=kl * 3))
    assert "kl_spike" not in rules(alerts)
