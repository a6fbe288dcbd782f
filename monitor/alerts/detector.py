"""What a detector sees and how it reports: the contract between the engine and the rules.

Two kinds of detector judge a run's rows (monitor/alerts/registry.py lists them):

- a *row* detector (`RowDetector`) is fed every batch of new rows (`Rows`) and judges each
  row itself (kl_nonfinite, kl_spike) or the run as a whole (no_kl_penalty, kl_missing);
- a *block* rule (`BlockRule`) judges robust statistics of aligned blocks of `block_rows`
  rows (`Blocks`), so its verdicts do not depend on where a refresh cut the data. It says
  per block whether its condition holds (`Verdict`); its `Episodes` turn that into alerts.

Either kind writes to the engine's `AlertLog`, and keeps whatever state it needs to give
the same verdicts however the rows were split into batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from monitor.alerts.config import AlertConfig
from monitor.alerts.episodes import Episodes, Event
from monitor.alerts.model import AlertLog
from monitor.presets import KLMeaning
from monitor.run import Run

LOG_FLOOR = 1e-8  # KL values at or below this count as this on the log scale


@dataclass(frozen=True)
class RunFacts:
    """What a run rule (registry.RUN_RULES) judges: the run as a whole, not its rows."""

    config: AlertConfig  # the thresholds in force for the run
    run: Run
    config_problem: str | None = None  # why the run's own `alerts` override was not applied


@dataclass(frozen=True)
class Rows:
    """One batch of new rows, as row detectors see it."""

    steps: np.ndarray
    raw: dict[str, np.ndarray]  # as logged; all-NaN for a series the run never logged
    per_token: np.ndarray  # each row's KL ÷ this is what the per-token band judges
    logged: frozenset[str]  # series the run has logged at all
    meaning: KLMeaning | None  # what the run's KL means (None: not known)


class RowDetector(Protocol):
    """Judges every batch of new rows."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The series it reads from `Rows.raw`."""
        ...

    def feed(self, rows: Rows, log: AlertLog) -> None: ...


@dataclass(frozen=True)
class Blocks:
    """The blocks a batch completed, oldest first.

    `stats` has one value per block: `step` (its first), `level` (median of per-token mean
    KL), `native` (median of mean KL in the run's own units), `mean` and `sem` (mean and
    standard error of `level`, for sign tests), `beta` and `reward` (medians), and the median
    of each series a rule names in its `columns`, under that name. `rows` has each block's
    rows, a (blocks, block_rows) matrix per series: `step`, `level`, `native`, `beta`,
    `reward` and those columns (forward-filled over missing rows).
    """

    stats: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return int(self.stats["step"].size)


def block_stats(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`Blocks.stats` of the (blocks, block_rows) matrices `rows`."""
    level = rows["level"]
    size = level.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = level.std(axis=1, ddof=1) / math.sqrt(size) if size > 1 else np.zeros(len(level))
    stats = {
        "step": rows["step"][:, 0],
        "level": np.median(level, axis=1),
        "mean": level.mean(axis=1),
        "sem": sem,
    }
    for name, matrix in rows.items():
        if name in ("native", "beta", "reward"):
            stats[name] = np.median(matrix, axis=1)
        elif name not in ("step", "level"):
            stats[name] = _medians(matrix)  # a rule's own series may start later
    return stats


def _medians(matrix: np.ndarray) -> np.ndarray:
    """Median of each row of `matrix`; NaN where a row has no value (a series not logged
    yet), without numpy's all-NaN warning."""
    if not np.isnan(matrix).any():
        return np.median(matrix, axis=1)
    out = np.full(matrix.shape[0], np.nan)
    some = ~np.isnan(matrix).all(axis=1)
    out[some] = np.nanmedian(matrix[some], axis=1)
    return out


@dataclass(frozen=True)
class Verdict:
    """A block rule's judgement of each new block."""

    on: np.ndarray  # the condition holds (an episode starts once it held for sustain_rows)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # what the message quotes
    hold: np.ndarray | None = None  # keeps an active episode open (default: `on`)
    quick: np.ndarray | None = None  # starts an episode at once, carrying its own evidence


@dataclass
class BlockRule:
    """A rule judged on block statistics: its verdicts, turned into episodes."""

    rule: str
    severity: str
    metric: str
    episodes: Episodes
    judge: Callable[[Blocks], Verdict]
    message: Callable[[Event, Blocks, Verdict], str]
    value_key: str = "native"  # the block statistic reported as the alert's value
    columns: tuple[str, ...] = ()  # series beyond KL, β and reward that `judge` reads

    def feed(self, blocks: Blocks, log: AlertLog) -> None:
        verdict = self.judge(blocks)
        steps = blocks.stats["step"].astype(np.int64)
        for event in self.episodes.feed(verdict.on, steps, verdict.hold, verdict.quick):
            if event.kind == "end":
                log.close(self.rule, event.step)
                continue
            value = float(blocks.stats[self.value_key][event.index])
            log.open(
                self.rule,
                self.severity,
                event.step,
                self.metric,
                value,
                self.message(event, blocks, verdict),
            )


class Sustained(Protocol):
    """A rule section with a sustain and a clear stretch (rows)."""

    @property
    def sustain_rows(self) -> int: ...

    @property
    def clear_rows(self) -> int: ...


def sustained_episodes(config: AlertConfig, section: Sustained) -> Episodes:
    """Episodes that start after `sustain_rows` and clear after `clear_rows` (in blocks)."""
    return Episodes(config.blocks(section.sustain_rows), config.blocks(section.clear_rows))
