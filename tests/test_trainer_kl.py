"""KL estimators: k3 ≥ 0, k1/k3 sample means approach the exact KL, k2's formula."""

from __future__ import annotations

import math

import torch

from trainer.kl import all_estimates, full_kl, k1, k2, k3, masked_seq_mean


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(8) * 1.5, torch.randn(8)  # policy logits, reference logits


def test_k3_is_never_negative() -> None:
    log_ratio = torch.linspace(-20, 20, 2001)
    assert (k3(log_ratio) >= 0).all()
    assert k3(torch.zeros(1)).item() == 0.0


def test_k3_matches_schulmans_form() -> None:
    # Schulman: k3 = (ρ − 1) − log ρ with ρ = π_ref/π = 1/r
    log_r = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0], dtype=torch.float64)
    rho = torch.exp(-log_r)
    assert torch.allclose(k3(log_r), (rho - 1) - torch.log(rho))


def test_k2_formula() -> None:
    log_r = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    assert torch.allclose(k2(log_r), 0.5 * log_r**2)
    assert torch.equal(k1(log_r), log_r)


def test_sample_means_approach_exact_kl() -> None:
    logits, ref_logits = _toy()
    exact = full_kl(logits, ref_logits).item()
    assert exact > 0.1  # a real gap, so the test can fail
    gen = torch.Generator().manual_seed(1)
    n = 200_000
    tokens = torch.multinomial(torch.softmax(logits, -1), n, replacement=True, generator=gen)
    log_ratio = torch.log_softmax(logits, -1)[tokens] - torch.log_softmax(ref_logits, -1)[tokens]
    for est in (k1, k3):
        values = est(log_ratio)
        stderr = values.std().item() / math.sqrt(n)
        assert abs(values.mean().item() - exact) < 5 * stderr + 1e-3, est.__name__


def test_k3_has_lower_variance_than_k1_near_the_reference() -> None:
    # The regime of a healthy run (π ≈ π_ref): Schulman's reason to prefer k3 for logging.
    logits, _ = _toy()
    ref_logits = logits + 0.2 * torch.randn(8, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    tokens = torch.multinomial(torch.softmax(logits, -1), 50_000, replacement=True, generator=gen)
    log_ratio = torch.log_softmax(logits, -1)[tokens] - torch.log_softmax(ref_logits, -1)[tokens]
    assert k3(log_ratio).std() < 0.5 * k1(log_ratio).std()


def test_full_kl_is_exact_and_zero_on_equal_logits() -> None:
    logits, ref_logits = _toy()
    p, q = torch.softmax(logits, -1), torch.softmax(ref_logits, -1)
    assert math.isclose(
        full_kl(logits, ref_logits).item(), (p * (p / q).log()).sum().item(), rel_tol=1e-5
    )
    assert abs(full_kl(logits, logits).item()) < 1e-6


def test_all_estimates_shapes_and_masked_mean() -> None:
    logits = torch.randn(2, 3, 5)
    ref = torch.randn(2, 3, 5)
    tok = torch.randint(0, 5, (2, 3))
    lp = torch.log_softmax(logits, -1).gather(-1, tok[..., None]).squeeze(-1)
    rlp = torch.log_softmax(ref, -1).gather(-1, tok[..., None]).squeeze(-1)
    est = all_estimates(lp, rlp, logits, ref)
    assert set(est) == {"k1", "k2", "k3", "full"}
    assert all(v.shape == (2, 3) for v in est.values())
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    x = torch.tensor([[1.0, 3.0, 100.0], [5.0, 100.0, 100.0]])
    assert masked_seq_mean(x, mask).tolist() == [2.0, 5.0]
