"""The health signals around KL: entropy_collapse, no_learning_signal, completions_truncated,
rollout_mismatch (grad_spike is a spike rule: monitor/alerts/spikes.py).

Each is judged only where the run logs its series (absence is said on the page, not alerted),
on evidence that accumulates row by row (monitor/alerts/evidence.py): the further a value is
from its limit, the sooner the alert. Defaults and their sources: docs/alerts.md.
"""

from __future__ import annotations

import numpy as np

from monitor.alerts.config import AlertConfig
from monitor.alerts.detector import Rows
from monitor.alerts.evidence import (
    EarlyLevel,
    EvidenceEpisodes,
    EvidenceRule,
    bernoulli_llr,
    log_excess,
)
from monitor.alerts.thresholds import Thresholds

ZERO_STD = "zero_std_frac"
GRAD = "grad_norm"
TRUNCATED = "truncated_frac"
PROB_DIFF = "rollout_prob_diff"  # verl: mean |p_trainer − p_rollout| per token
LOGP_DIFF = "rollout_logp_diff"  # TRL: mean |log p_trainer − log p_vLLM| per token
IS_RATIO = "rollout_is_ratio"  # TRL / verl: mean importance-sampling ratio trainer / rollout
ROLLOUT_KL = "rollout_kl"  # OpenRLHF: mean log p_rollout − log p_trainer (signed)


def _value_at(rows_raw: dict[str, np.ndarray], metric: str, i: int) -> float:
    return float(rows_raw[metric][i])


def entropy_collapse(config: AlertConfig, _th: Thresholds) -> EvidenceRule | None:
    sec = config.entropy_collapse
    if not sec.enabled:
        return None
    metric = sec.metric
    early = EarlyLevel(sec.reference_rows)

    def judge(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        x = rows.raw[metric]
        ok = x > 0
        reference = early.feed(np.where(ok, x, np.nan))
        limit = sec.fraction * reference
        with np.errstate(invalid="ignore", divide="ignore"):
            below = -np.clip(np.log(x / limit), -sec.max_log_step, sec.max_log_step)
        below = np.where(np.isfinite(limit) & ok, below, np.nan)
        return below - sec.margin, -below

    def describe(step: int, i: int, rows: Rows) -> tuple[str, float, str]:
        value = _value_at(rows.raw, metric, i)
        start = early.value or float("nan")
        return (
            metric,
            value,
            f"Policy entropy has collapsed since step {step}: {value:.3g}, "
            f"{value / start:.0%} of its early level {start:.3g} (alert under "
            f"{sec.fraction:.0%}): the policy is becoming deterministic and will stop "
            "exploring — raise the sampling temperature or an entropy bonus, lower the "
            "learning rate, or keep an earlier checkpoint.",
        )

    episodes = EvidenceEpisodes(sec.evidence, sec.clear_evidence)
    return EvidenceRule("entropy_collapse", sec.severity, (metric,), episodes, judge, describe)


def no_learning_signal(config: AlertConfig, th: Thresholds) -> EvidenceRule | None:
    sec = config.no_learning_signal
    if not sec.enabled:
        return None
    # With one completion per prompt every group has zero spread by construction.
    judge_share = th.group_size is None or th.group_size > 1
    per_zero_row = sec.evidence / max(1, sec.zero_grad_rows)

    def judge(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        n = rows.steps.size
        sources = []
        if judge_share and ZERO_STD in rows.logged:
            sources.append(bernoulli_llr(rows.raw[ZERO_STD], sec.normal_share, sec.dead_share))
        if GRAD in rows.logged:
            grad = rows.raw[GRAD]
            # exactly 0 counts toward the stretch; any other gradient resets it
            z = np.where(grad == 0, per_zero_row, -2 * sec.evidence)
            sources.append(np.where(np.isfinite(grad), z, np.nan))
        if not sources:
            return np.full(n, np.nan), np.full(n, np.nan)
        with np.errstate(invalid="ignore"):
            z_on = np.fmax.reduce(sources) if len(sources) > 1 else sources[0]
        return z_on, -z_on

    def describe(step: int, i: int, rows: Rows) -> tuple[str, float, str]:
        share = rows.raw[ZERO_STD][i] if ZERO_STD in rows.logged else np.nan
        grad = rows.raw[GRAD][i] if GRAD in rows.logged else np.nan
        if judge_share and np.isfinite(share) and share >= 0.5:
            metric, value = ZERO_STD, float(share)
            what = f"{share:.0%} of prompt groups have no reward spread"
        else:
            metric, value = GRAD, float(grad)
            what = "the gradient norm is exactly 0"
        return (
            metric,
            value,
            f"No learning signal since step {step}: {what}, so advantages are zero and the "
            "policy does not move — the reward is saturated or constant for these prompts. "
            "Use harder prompts or a finer reward, filter zero-spread groups (dynamic "
            "sampling), or stop the run.",
        )

    columns = (ZERO_STD, GRAD) if judge_share else (GRAD,)
    episodes = EvidenceEpisodes(sec.evidence, sec.evidence)
    return EvidenceRule("no_learning_signal", sec.severity, columns, episodes, judge, describe)


def completions_truncated(config: AlertConfig, _th: Thresholds) -> EvidenceRule | None:
    sec = config.completions_truncated
    if not sec.enabled:
        return None

    def judge(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        z = bernoulli_llr(rows.raw[TRUNCATED], sec.normal_share, sec.truncated_share)
        return z, -z

    def describe(step: int, i: int, rows: Rows) -> tuple[str, float, str]:
        value = _value_at(rows.raw, TRUNCATED, i)
        return (
            TRUNCATED,
            value,
            f"{value:.0%} of completions hit the length limit (since step {step}): truncated "
            "answers get no EOS and a misleading reward, and lengths tend to blow up — raise "
            "max_completion_length (max_response_length), penalize overlong answers, or "
            "check the EOS token.",
        )

    episodes = EvidenceEpisodes(sec.evidence, sec.evidence)
    return EvidenceRule(
        "completions_truncated", sec.severity, (TRUNCATED,), episodes, judge, describe
    )


def rollout_mismatch(config: AlertConfig, _th: Thresholds) -> EvidenceRule | None:
    sec = config.rollout_mismatch
    if not sec.enabled:
        return None
    limits = {PROB_DIFF: sec.prob_diff_limit, LOGP_DIFF: sec.logp_diff_limit}
    early = {name: EarlyLevel(sec.reference_rows) for name in (PROB_DIFF, LOGP_DIFF, ROLLOUT_KL)}
    cap, margin = sec.max_log_step, sec.margin

    def evidence(rows: Rows) -> dict[str, np.ndarray]:
        """Per series present: per-row log-excess over its limit (the strongest counts)."""
        out: dict[str, np.ndarray] = {}
        for name, limit in limits.items():
            if name in rows.logged:
                out[name] = log_excess(rows.raw[name], limit, margin, cap)
        for name, level in early.items():
            if name in rows.logged:
                x = np.abs(rows.raw[name])
                reference = level.feed(x)
                grown = sec.growth_factor * np.where(reference > 0, reference, np.nan)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = np.clip(np.log(np.maximum(x, 1e-12) / grown), -cap, cap)
                z = np.where(np.isfinite(grown) & np.isfinite(x), ratio - margin, np.nan)
                key = f"{name} (growth)"
                out[key] = z
        if IS_RATIO in rows.logged:
            r = rows.raw[IS_RATIO]
            with np.errstate(invalid="ignore", divide="ignore"):
                off = np.abs(np.log(np.maximum(r, 1e-12)))
            out[IS_RATIO] = log_excess(off, np.log(sec.is_ratio_limit), margin, cap)
        return out

    last: dict[str, dict[str, np.ndarray]] = {}

    def judge(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        found = last["z"] = evidence(rows)
        n = rows.steps.size
        if not found:
            return np.full(n, np.nan), np.full(n, np.nan)
        with np.errstate(invalid="ignore"):
            z_on = np.fmax.reduce(list(found.values()))
        # clearing: every signal back under its limit (the weakest excess counts)
        with np.errstate(invalid="ignore"):
            z_off = -np.fmax.reduce([z + margin for z in found.values()])
        return z_on, z_off

    def describe(step: int, i: int, rows: Rows) -> tuple[str, float, str]:
        found = last["z"]
        key = max(found, key=lambda k: found[k][i] if np.isfinite(found[k][i]) else -np.inf)
        metric = key.split(" ")[0]
        value = _value_at(rows.raw, metric, i)
        if key.endswith("(growth)"):
            start = early[metric].value or float("nan")
            what = f"{metric} = {value:.3g}, {abs(value) / start:.0f}× its early level {start:.3g}"
        elif metric == IS_RATIO:
            what = f"the mean importance-sampling ratio is {value:.3g}, not ≈ 1"
        else:
            what = f"{metric} = {value:.3g}, above {limits[metric]:.3g}"
        return (
            metric,
            value,
            f"The rollout engine and the trainer disagree about the policy since step {step} "
            f"({what}): off-policy error grows until the run crashes — check that both use "
            "the same precision and weights (sync after each update), turn on importance-"
            "sampling correction, or disable cascade attention in vLLM.",
        )

    columns = (PROB_DIFF, LOGP_DIFF, IS_RATIO, ROLLOUT_KL)
    episodes = EvidenceEpisodes(sec.evidence, sec.clear_evidence)
    return EvidenceRule("rollout_mismatch", sec.severity, columns, episodes, judge, describe)
