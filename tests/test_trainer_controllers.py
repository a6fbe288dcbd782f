"""β controllers: the seed's thermostat table, clamping, Ziegler's proportional rule."""

from __future__ import annotations

import pytest

from trainer.controllers import AdaptiveKL, FixedKL, NoPenalty, ProportionalKL, make_controller


def test_adaptive_reproduces_the_seed_table() -> None:
    ctl = AdaptiveKL(beta=0.1, target=0.02)
    observed = [0.01, 0.02, 0.05, 0.1, 0.03, 0.02]
    betas = [ctl.update(kl) for kl in observed]
    # 0.01 is not < 0.5·0.02 and 0.03 is not > 1.5·0.02: both bands are strict.
    assert betas == pytest.approx([0.1, 0.1, 0.15, 0.225, 0.225, 0.225])


def test_adaptive_lowers_beta_and_clamps_to_bounds() -> None:
    ctl = AdaptiveKL(beta=0.1, target=0.02)
    assert ctl.update(0.001) == pytest.approx(0.1 / 1.5)
    for _ in range(20):
        ctl.update(0.0)
    assert ctl.beta == pytest.approx(0.01)
    for _ in range(40):
        ctl.update(10.0)
    assert ctl.beta == pytest.approx(1.0)
    custom = AdaptiveKL(beta=0.5, target=0.02, beta_min=0.2, beta_max=0.6)
    custom.update(1.0)
    assert custom.beta == pytest.approx(0.6)


def test_proportional_follows_ziegler() -> None:
    ctl = ProportionalKL(beta=0.1, target=0.05, horizon=1000)
    # KL twice the target: error clipped to +0.2, β ← β(1 + 0.2·n/horizon)
    assert ctl.update(0.1, n=64) == pytest.approx(0.1 * (1 + 0.2 * 64 / 1000))
    before = ctl.beta
    # KL 10 % below target: unclipped error −0.1
    assert ctl.update(0.045, n=100) == pytest.approx(before * (1 - 0.1 * 100 / 1000))
    before = ctl.beta
    assert ctl.update(0.05, n=100) == pytest.approx(before)  # on target: unchanged


def test_none_and_fixed_never_move() -> None:
    none, fixed = NoPenalty(), FixedKL(0.3)
    for kl in (0.0, 0.5, 100.0):
        assert none.update(kl) == 0.0
        assert fixed.update(kl) == 0.3


def test_state_round_trip_and_factory() -> None:
    ctl = make_controller("adaptive", 0.1, 0.02)
    ctl.update(1.0)
    other = make_controller("adaptive", 0.1, 0.02)
    other.load_state_dict(ctl.state_dict())
    assert other.beta == pytest.approx(0.15)
    with pytest.raises(ValueError, match="unknown KL controller"):
        make_controller("pid", 0.1, 0.02)
