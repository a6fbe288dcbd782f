"""The health rules (entropy_collapse, no_learning_signal, completions_truncated, grad_spike,
rollout_mismatch) and the evidence-based band rules (kl_high, kl_low) held to synthetic traces:
each fires when it should, stays quiet when it should not, the further out the sooner, and the
same however the rows arrive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor import AlertEngine, load_run
from monitor.alerts.config import AlertConfig
from monitor.alerts.detector import BlockRule, Blocks, Verdict, sustained_episodes
from monitor.alerts.evidence import Cusum, EvidenceEpisodes, bernoulli_llr
from tests.test_alerts import (
    HEALTHY_INFO,
    alerts_for,
    assert_split_invariant,
    detection_rows,
    noisy,
    rules,
    trace,
    write_run,
)

HEALTH_RULES = {
    "entropy_collapse",
    "no_learning_signal",
    "completions_truncated",
    "grad_spike",
    "rollout_mismatch",
}


def quiet_kl(n: int, seed: int) -> np.ndarray:
    return noisy(0.05, 0.1, n, seed)


def shares(rate: np.ndarray | float, groups: int, n: int, seed: int) -> np.ndarray:
    """A share logged per step: how many of `groups` groups (completions) had the property."""
    rng = np.random.default_rng(seed)
    return rng.binomial(groups, np.broadcast_to(rate, (n,))) / groups


def first(alerts: list, rule: str):  # type: ignore[no-untyped-def]
    return next(a for a in alerts if a.rule == rule)


# -- the evidence machinery -------------------------------------------------------------------


def test_cusum_carries_exactly_across_batches() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(-0.05, 1.0, 2000)
    steps = np.arange(2000)
    whole, whole_start = Cusum().run(z, steps)
    split = Cusum()
    pieces = [split.run(z[a:b], steps[a:b]) for a, b in ((0, 7), (7, 900), (900, 2000))]
    assert np.allclose(np.concatenate([p[0] for p in pieces]), whole, rtol=0, atol=1e-9)
    assert np.array_equal(np.concatenate([p[1] for p in pieces]), whole_start)
    # The sum is max(0, s + z) row by row.
    s, expected = 0.0, []
    for value in z:
        s = max(0.0, s + value)
        expected.append(s)
    assert np.allclose(whole, expected, atol=1e-9)


def test_evidence_episode_starts_where_its_excursion_began() -> None:
    z_on = np.r_[np.full(50, -1.0), np.full(10, 2.0), np.full(40, -1.0)]
    episodes = EvidenceEpisodes(evidence=10.0, clear_evidence=5.0)
    crossings = episodes.feed(z_on, -z_on, np.arange(100) * 10)
    assert [(c.opened, c.index, c.step) for c in crossings] == [
        (True, 54, 500),  # 2 per row from row 50: 10 reached at row 54; began at row 50
        (False, 64, 600),  # 1 per row against from row 60: 5 at row 64
    ]


def test_bernoulli_evidence_breaks_even_between_its_rates() -> None:
    z = bernoulli_llr(np.array([0.0, 0.5, 1.0]), normal=0.3, bad=0.7)
    assert z[0] < 0 and z[1] == pytest.approx(0) and z[2] > 0


# -- kl_high / kl_low: the further out, the sooner ----------------------------------------------


@pytest.mark.parametrize(("ratio", "within"), [(5.0, 40), (2.0, 100), (1.5, 220)])
def test_kl_high_is_flagged_sooner_the_further_above(
    tmp_path: Path, ratio: float, within: int
) -> None:
    kl = quiet_kl(1200, seed=int(ratio * 10))
    kl[400:] = noisy(0.1 * ratio, 0.1, 800, seed=7)
    alerts = alerts_for(tmp_path, trace(kl, kl_max=kl * 2))
    high = first(alerts, "kl_high")
    assert 395 <= high.step <= 410
    raised = detection_rows(tmp_path / "live", trace(kl, kl_max=kl * 2), piece=10)
    assert raised["kl_high"][1] - 400 <= within


@pytest.mark.parametrize(("sigma", "seed"), [(0.1, 0), (0.3, 1), (0.5, 2)])
def test_short_grpo_climb_is_high_within_the_run_and_no_spike(
    tmp_path: Path, sigma: float, seed: int
) -> None:
    # The 300-step run: per-token KL 0.05 → 0.6 over its last 150 steps (~6× the top).
    t = np.arange(300)
    kl = noisy(np.where(t < 150, 0.05, 0.05 + 0.55 * (t - 150) / 150), sigma, 300, seed)
    raised = detection_rows(tmp_path, trace(kl, kl_max=kl * 2), piece=10)
    assert raised["kl_high"][1] <= 250  # leaves the band at step ~164
    assert "kl_spike" not in raised  # a smooth climb is not a spike


@pytest.mark.parametrize(("level", "seed"), [(0.09, 1), (0.1, 2), (0.1, 3), (0.105, 4)])
def test_noise_around_the_bands_top_never_fires(tmp_path: Path, level: float, seed: int) -> None:
    kl = noisy(level, 0.5, 10_000, seed)
    assert "kl_high" not in rules(alerts_for(tmp_path, trace(kl, kl_max=kl * 2)))


def test_kl_high_clears_once_kl_returns(tmp_path: Path) -> None:
    kl = quiet_kl(1500, seed=5)
    kl[300:700] = noisy(0.4, 0.1, 400, seed=6)
    (high,) = [a for a in alerts_for(tmp_path, trace(kl, kl_max=kl * 2)) if a.rule == "kl_high"]
    assert (high.step, high.end_step) == (300, 700)


# -- entropy_collapse ------------------------------------------------------------------------


def entropy_trace(floor: float, n: int = 600, seed: int = 0) -> np.ndarray:
    """4.0 at the start, falling over 100 steps from step 50 to `floor` × 4.0, then flat."""
    t = np.arange(n)
    fall = np.clip((t - 50) / 100, 0, 1)
    return noisy(4.0 * (1 - (1 - floor) * fall), 0.05, n, seed)


def test_entropy_collapse_fires_and_a_levelling_off_does_not(tmp_path: Path) -> None:
    n = 600
    collapsing = trace(quiet_kl(n, 1), entropy=entropy_trace(0.25, n, seed=2))
    alert = first(alerts_for(tmp_path / "c", collapsing), "entropy_collapse")
    # 0.4 × 4.0 is crossed at step 50 + 100 × 0.6 / 0.75 = 130; flagged within ~60 rows
    assert 110 <= alert.step <= 160 and alert.metric == "entropy"
    assert "early level" in alert.message
    sharpening = trace(quiet_kl(n, 3), entropy=entropy_trace(0.6, n, seed=4))
    assert "entropy_collapse" not in rules(alerts_for(tmp_path / "h", sharpening))


def test_health_rules_are_not_judged_without_their_series(tmp_path: Path) -> None:
    # The same run without entropy, grad norm, shares or rollout series: nothing to say.
    alerts = alerts_for(tmp_path, trace(quiet_kl(800, 9)))
    assert not HEALTH_RULES & set(rules(alerts))


# -- no_learning_signal ------------------------------------------------------------------------


def test_zero_spread_groups_take_the_learning_signal(tmp_path: Path) -> None:
    n = 400
    share = shares(np.where(np.arange(n) < 100, 0.4, 1.0), 8, n, seed=1)
    grad = noisy(1.0, 0.3, n, seed=2)  # a KL term keeps a gradient: only the share says it
    alert = first(
        alerts_for(tmp_path, trace(quiet_kl(n, 3), zero_std_frac=share, grad_norm=grad)),
        "no_learning_signal",
    )
    assert 95 <= alert.step <= 110 and alert.metric == "zero_std_frac"
    raised = detection_rows(
        tmp_path / "live", trace(quiet_kl(n, 3), zero_std_frac=share, grad_norm=grad), piece=10
    )
    assert raised["no_learning_signal"][1] <= 160  # ~50 rows of all-zero-spread groups


@pytest.mark.parametrize(("rate", "groups"), [(0.3, 8), (0.6, 8), (0.6, 1), (0.45, 2)])
def test_hard_tasks_with_many_zero_spread_groups_are_normal(
    tmp_path: Path, rate: float, groups: int
) -> None:
    n = 5000
    share = shares(rate, groups, n, seed=groups)
    columns = trace(quiet_kl(n, 5), zero_std_frac=share, grad_norm=noisy(1.0, 0.3, n, 6))
    assert "no_learning_signal" not in rules(alerts_for(tmp_path, columns))


def test_a_gradient_of_exactly_zero_is_no_learning(tmp_path: Path) -> None:
    n = 300
    grad = noisy(1.0, 0.3, n, seed=7)
    grad[150:] = 0.0
    grad_some_zeros = noisy(1.0, 0.3, n, seed=8)
    grad_some_zeros[::15] = 0.0  # isolated zero steps (skipped updates): no stretch
    alert = first(alerts_for(tmp_path, trace(quiet_kl(n, 9), grad_norm=grad)), "no_learning_signal")
    assert (alert.step, alert.metric, alert.value) == (150, "grad_norm", 0.0)
    assert "grad_spike" not in rules(alerts_for(tmp_path, trace(quiet_kl(n, 9), grad_norm=grad)))
    quiet = alerts_for(tmp_path / "q", trace(quiet_kl(n, 9), grad_norm=grad_some_zeros))
    assert "no_learning_signal" not in rules(quiet)


def test_groups_of_one_have_no_spread_by_construction(tmp_path: Path) -> None:
    n = 300
    info = {**HEALTHY_INFO, "config": {"num_generations": 1}}
    columns = trace(quiet_kl(n, 1), zero_std_frac=np.ones(n), grad_norm=noisy(1.0, 0.3, n, 2))
    assert "no_learning_signal" in rules(alerts_for(tmp_path / "a", columns))
    assert "no_learning_signal" not in rules(alerts_for(tmp_path / "b", columns, info=info))


# -- completions_truncated ---------------------------------------------------------------------


def test_truncation_fires_on_most_completions_cut(tmp_path: Path) -> None:
    n = 400
    cut = shares(np.where(np.arange(n) < 200, 0.1, 0.9), 16, n, seed=1)
    alert = first(
        alerts_for(tmp_path, trace(quiet_kl(n, 2), truncated_frac=cut)), "completions_truncated"
    )
    assert 195 <= alert.step <= 210 and alert.metric == "truncated_frac"
    assert "length limit" in alert.message


@pytest.mark.parametrize(("rate", "groups"), [(0.1, 16), (0.3, 8), (0.3, 4)])
def test_some_truncation_is_normal(tmp_path: Path, rate: float, groups: int) -> None:
    n = 5000
    columns = trace(quiet_kl(n, 3), truncated_frac=shares(rate, groups, n, seed=groups))
    assert "completions_truncated" not in rules(alerts_for(tmp_path, columns))


# -- grad_spike ---------------------------------------------------------------------------------


def test_grad_spike_at_its_step_and_noise_is_quiet(tmp_path: Path) -> None:
    n = 3000
    grad = noisy(1.0, 0.5, n, seed=11) * np.exp(np.arange(n) / 3000)  # noisy, slow drift
    assert "grad_spike" not in rules(
        alerts_for(tmp_path / "q", trace(quiet_kl(n, 1), grad_norm=grad))
    )
    grad[1234] = 40.0
    spike = first(alerts_for(tmp_path / "s", trace(quiet_kl(n, 1), grad_norm=grad)), "grad_spike")
    assert abs(spike.step - 1234) <= 2 and spike.value == 40.0


def test_a_gradient_norm_that_climbs_is_not_a_spike(tmp_path: Path) -> None:
    # Shaped like sample_runs/no-penalty-hacking's collapse: 2.5 → 12 over 50 steps, then high.
    n = 600
    t = np.arange(n)
    grad = noisy(2.5 * np.exp(np.clip((t - 340) / 50, 0, 1) * np.log(4.8)), 0.12, n, seed=12)
    columns = trace(quiet_kl(n, 2), grad_norm=grad)
    assert "grad_spike" not in rules(alerts_for(tmp_path, columns))


# -- rollout_mismatch ---------------------------------------------------------------------------


def test_verl_prob_diff_above_its_limit(tmp_path: Path) -> None:
    n = 500
    diff = noisy(0.003, 0.2, n, seed=1)
    diff[250:] = noisy(0.03, 0.2, 250, seed=2)
    alert = first(
        alerts_for(tmp_path, trace(quiet_kl(n, 3), rollout_prob_diff=diff)), "rollout_mismatch"
    )
    assert 245 <= alert.step <= 260 and alert.metric == "rollout_prob_diff"
    flat = trace(quiet_kl(5000, 4), rollout_prob_diff=noisy(0.003, 0.3, 5000, seed=5))
    assert "rollout_mismatch" not in rules(alerts_for(tmp_path / "flat", flat))


def test_a_gap_that_grows_from_its_early_level(tmp_path: Path) -> None:
    # TRL's logp difference, well under its absolute limit, grows 10-fold: flagged by growth.
    n = 600
    t = np.arange(n)
    gap = noisy(0.002 * np.exp(np.clip(t - 200, 0, None) / 130), 0.2, n, seed=6)
    alert = first(
        alerts_for(tmp_path, trace(quiet_kl(n, 7), rollout_logp_diff=gap)), "rollout_mismatch"
    )
    assert alert.metric == "rollout_logp_diff" and "early level" in alert.message
    assert 200 <= alert.step <= 450


def test_importance_sampling_ratio_drifting_from_one(tmp_path: Path) -> None:
    n = 500
    ratio = noisy(1.0, 0.02, n, seed=8)
    ratio[300:] = noisy(0.7, 0.02, 200, seed=9)
    alert = first(
        alerts_for(tmp_path, trace(quiet_kl(n, 1), rollout_is_ratio=ratio)), "rollout_mismatch"
    )
    assert 295 <= alert.step <= 310 and alert.metric == "rollout_is_ratio"


# -- metric_nonfinite ---------------------------------------------------------------------------


def test_nan_beyond_kl_is_divergence(tmp_path: Path) -> None:
    n = 200
    grad, loss = noisy(1.0, 0.3, n, seed=1), noisy(0.1, 0.3, n, seed=2)
    grad[120:] = np.nan
    loss[150] = np.inf
    alerts = alerts_for(tmp_path, trace(quiet_kl(n, 3), grad_norm=grad, loss=loss))
    (nan,) = [a for a in alerts if a.rule == "metric_nonfinite"]
    # NaN from step 120: it counts once it has lasted 3 rows (a lone NaN may be absence)
    assert (nan.step, nan.metric, nan.severity, nan.end_step) == (
        122,
        "grad_norm",
        "critical",
        None,
    )


def test_a_row_that_only_lacks_a_series_is_not_nan(tmp_path: Path) -> None:
    # Rows where nothing of klwatch's is logged (an eval row of TensorBoard) read all-NaN;
    # a series logged every 10 steps, or one that starts late, is NaN between its values.
    n = 300
    grad, kl = noisy(1.0, 0.3, n, seed=4), quiet_kl(n, 5)
    sparse = np.where(np.arange(n) % 10 == 0, noisy(2.0, 0.05, n, seed=6), np.nan)
    late_loss = np.where(np.arange(n) >= 150, 0.1, np.nan)
    columns = trace(kl, grad_norm=grad, entropy=sparse, loss=late_loss)
    for name in columns:
        columns[name][::25] = np.nan
    columns["reward_mean"][[60, 61, 200]] = np.nan  # records that leave a key out
    columns["eval_score"] = np.where(np.arange(n) % 25 == 0, 0.5, np.nan)
    assert "metric_nonfinite" not in rules(alerts_for(tmp_path, columns))
    assert_split_invariant(tmp_path, columns, alerts_for(tmp_path, columns), [5, 50], seed=1)


# -- the same however rows arrive ----------------------------------------------------------------


def health_trace(n: int = 1500) -> dict[str, np.ndarray]:
    """Something for every health rule and both band rules."""
    t = np.arange(n)
    kl = quiet_kl(n, 21)
    kl[300:500] = noisy(0.5, 0.1, 200, seed=22)
    kl[900:1100] = noisy(0.002, 0.1, 200, seed=23)
    grad = noisy(1.0, 0.3, n, seed=24)
    grad[700] = 50.0
    grad[1200:1260] = 0.0
    diff = noisy(0.003, 0.2, n, seed=25)
    diff[1000:] = 0.05
    return trace(
        kl,
        kl_max=kl * 2,
        entropy=entropy_trace(0.2, n, seed=26),
        zero_std_frac=shares(np.where(t < 600, 0.4, np.where(t < 800, 1.0, 0.4)), 8, n, 27),
        truncated_frac=shares(np.where((t > 400) & (t < 600), 0.9, 0.1), 8, n, 28),
        grad_norm=grad,
        rollout_prob_diff=diff,
    )


def test_health_alerts_do_not_depend_on_how_rows_arrive(tmp_path: Path) -> None:
    columns = health_trace()
    whole = alerts_for(tmp_path, columns)
    assert {"kl_high", "kl_low", *HEALTH_RULES} <= set(rules(whole))
    assert_split_invariant(tmp_path, columns, whole, cut_counts=[1, 9, 60, 400], seed=3)


# -- block rules read any series ------------------------------------------------------------------


def test_a_block_rule_can_read_any_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.alerts import registry

    def length_blowup(config: AlertConfig, _th: object) -> BlockRule:
        def judge(blocks: Blocks) -> Verdict:
            # block medians and rows of a series beyond KL, β and reward, by its own name
            assert blocks.rows["response_len"].shape == (blocks.n, config.block_rows)
            return Verdict(blocks.stats["response_len"] > 100)

        return BlockRule(
            "reward_hacking",  # a registered id, so the alert orders like any other
            "warning",
            "response_len",
            sustained_episodes(config, config.reward_hacking),
            judge,
            lambda event, blocks, verdict: f"long since {event.step}",
            value_key="response_len",
            columns=("response_len",),
        )

    monkeypatch.setitem(registry.BLOCK_RULES, "reward_hacking", length_blowup)
    n = 1000
    length = np.where(np.arange(n) < 500, 40.0, 300.0)
    run = load_run(write_run(tmp_path / "r", trace(quiet_kl(n, 1), response_len=length)))
    engine = AlertEngine()
    engine.update(run)
    (alert,) = [a for a in engine.alerts if a.rule == "reward_hacking"]
    assert (alert.step, alert.value, alert.message) == (500, 300.0, "long since 500")
