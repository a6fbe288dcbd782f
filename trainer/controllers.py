"""β controllers: how strongly the KL penalty pulls the policy back to the reference.

Every controller exposes `beta` (the coefficient used for the *current* step's penalty) and
`update(observed_kl, n)` called once per step with the batch's mean per-token KL; the new β
applies from the next step on. `state_dict` / `load_state_dict` carry β across a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTROLLERS = ("none", "fixed", "adaptive", "proportional")


class KLController:
    beta: float

    def update(self, observed_kl: float, n: int = 1) -> float:
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.beta = float(state["beta"])


class NoPenalty(KLController):
    """β = 0: the reward alone drives the policy (the seed's reward-hacking scenario)."""

    def __init__(self) -> None:
        self.beta = 0.0


class FixedKL(KLController):
    """β constant ("many implementations just use β = 0.1 and call it a day")."""

    def __init__(self, beta: float) -> None:
        self.beta = beta


@dataclass
class AdaptiveKL(KLController):
    """The seed's thermostat: β × factor when KL > high·target, β ÷ factor when
    KL < low·target, otherwise unchanged; then clamped to [beta_min, beta_max]."""

    beta: float
    target: float
    factor: float = 1.5
    high: float = 1.5
    low: float = 0.5
    beta_min: float = 0.01
    beta_max: float = 1.0

    def update(self, observed_kl: float, n: int = 1) -> float:
        if observed_kl > self.high * self.target:
            self.beta *= self.factor
        elif observed_kl < self.low * self.target:
            self.beta /= self.factor
        self.beta = min(self.beta_max, max(self.beta_min, self.beta))
        return self.beta


@dataclass
class ProportionalKL(KLController):
    """Ziegler et al. 2019 (as in TRL/OpenRLHF/verl): e = clip(KL/target − 1, −0.2, 0.2),
    β ← β·(1 + e·n/horizon), with n the number of samples seen this step."""

    beta: float
    target: float
    horizon: float = 10000.0
    clip: float = 0.2

    def update(self, observed_kl: float, n: int = 1) -> float:
        error = min(self.clip, max(-self.clip, observed_kl / self.target - 1.0))
        self.beta *= 1.0 + error * n / self.horizon
        return self.beta


def make_controller(
    name: str,
    beta: float,
    target: float,
    *,
    horizon: float = 10000.0,
    factor: float = 1.5,
    beta_min: float = 0.01,
    beta_max: float = 1.0,
) -> KLController:
    if name == "none":
        return NoPenalty()
    if name == "fixed":
        return FixedKL(beta)
    if name == "adaptive":
        return AdaptiveKL(beta, target, factor=factor, beta_min=beta_min, beta_max=beta_max)
    if name == "proportional":
        return ProportionalKL(beta, target, horizon=horizon)
    raise ValueError(f"unknown KL controller {name!r}; choose from {CONTROLLERS}")
