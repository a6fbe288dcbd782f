"""The alert engine: a run's rows, fed as they arrive, through every registered detector.

`AlertEngine.update(run)` feeds the rows appended since the last call (O(new rows),
vectorized); the verdicts do not depend on how rows were split into calls. Row detectors
judge each batch of rows; block rules judge robust statistics of aligned blocks of
`block_rows` rows, so they fire at most one block late. Which detectors run:
monitor/alerts/registry.py; thresholds: monitor/alerts/config.py; what each rule means and why:
docs/alerts.md.
"""

from __future__ import annotations

import time

import numpy as np

from monitor.alerts.config import AlertConfig, RulesError, config_for_run
from monitor.alerts.detector import BlockRule, Blocks, RowDetector, Rows, RunFacts, block_stats
from monitor.alerts.episodes import ForwardFill
from monitor.alerts.model import Alert, AlertLog, alert_order
from monitor.alerts.registry import BLOCK_RULES, ROW_RULES, RUN_RULES
from monitor.alerts.thresholds import Thresholds, per_token_divisor, resolve_thresholds
from monitor.presets import KLMeaning
from monitor.run import Run

# The series every block rule reads (forward-filled over missing rows), by the name they have
# in `Blocks`: mean KL, β, reward. A rule that reads others names them in `BlockRule.columns`;
# they reach `Blocks` under their own names.
BLOCK_SERIES = {"kl_mean": "native", "beta": "beta", "reward_mean": "reward"}


class MissingAsNaN(dict[str, np.ndarray]):
    """A batch's columns; a series the run never logged reads as all-NaN, made on demand."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def __missing__(self, name: str) -> np.ndarray:
        self[name] = np.full(self.count, np.nan)
        return self[name]


class AlertEngine:
    """Streaming detectors for one run. Feed it with `update(run)` after each refresh."""

    # What one reading of the run's rows built up; `_reset` starts them over.
    _generation: int  # run.generation the rows were read under
    _rows: int  # rows fed so far
    _log: AlertLog  # episodes raised from the rows
    _row_detectors: list[RowDetector]  # built for the run by `_start`
    _block_rules: list[BlockRule]
    _fill: dict[str, ForwardFill]  # BLOCK_SERIES over missing rows
    _pending: dict[str, np.ndarray]  # rows of the block not complete yet

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.base_config = config or AlertConfig()
        self.config = self.base_config  # with the run's own `alerts` section, once read
        self.th: Thresholds | None = None  # what the KL is judged against, once rows arrived
        self.meaning: KLMeaning | None = None
        self._reported: set[tuple[str, str, int]] = set()
        self._run_rules: dict[str, Alert | None] = dict.fromkeys(RUN_RULES)
        self.config_problem: str | None = None  # why the run's `alerts` override was not used
        self._reset()

    # -- public -----------------------------------------------------------------------------

    @property
    def alerts(self) -> list[Alert]:
        """Every episode so far in the order raised; active ones have end_step None."""
        facts = [a for a in self._run_rules.values() if a is not None]
        return sorted(self._log.alerts + facts, key=alert_order)

    @property
    def rows_seen(self) -> int:
        return self._rows

    def update(self, run: Run) -> list[Alert]:
        """Feed rows [rows_seen, run.n_rows); return alerts raised by them (not seen before)."""
        if run.generation != self._generation or run.n_rows < self._rows:
            self._reset()  # rows were rewritten (resume, replaced file): start over
        self._generation = run.generation
        n = run.n_rows
        if n == self._rows:
            return []
        self.meaning = run.meaning  # it can change as metadata arrives (β from a config)
        if self._rows == 0:
            self._start(run)
        before = len(self._log.alerts)
        self._feed(run, slice(self._rows, n))
        self._rows = n
        fresh = []
        for alert in sorted(self._log.alerts[before:], key=alert_order):
            key = (alert.rule, alert.metric, alert.step)
            if key not in self._reported:
                self._reported.add(key)
                fresh.append(alert)
        return fresh

    def alerts_now(self, run: Run, now: float | None = None) -> list[Alert]:
        """`alerts` with the run rules (run_stalled, records_unreadable, …) brought up to
        date first."""
        self.check_run_rules(run, now)
        return self.alerts

    def check_run_rules(self, run: Run, now: float | None = None) -> list[Alert]:
        """Bring the rules about the run as a whole up to date; return their active alerts."""
        now = time.time() if now is None else now
        facts = RunFacts(self.config, run, self.config_problem)
        for rule, check in RUN_RULES.items():
            self._run_rules[rule] = check(facts, now, self._run_rules[rule])
        return [a for a in self._run_rules.values() if a is not None and a.active]

    def check_stall(self, run: Run, now: float | None = None) -> Alert | None:
        """`run_stalled` from the wall clock: active while run.json says running and nothing
        was written for max(min_seconds, factor × usual step interval)."""
        return next((a for a in self.check_run_rules(run, now) if a.rule == "run_stalled"), None)

    # -- setup ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._generation = -1
        self._rows = 0
        self._log = AlertLog()
        self._row_detectors = []
        self._block_rules = []
        self._fill = {name: ForwardFill() for name in BLOCK_SERIES}
        self._pending = {}
        self.config = self.base_config

    def _start(self, run: Run) -> None:
        """Resolve the run's config and thresholds and build its detectors (first rows)."""
        try:
            self.config = config_for_run(self.base_config, run.info, "run.json (alerts)")
            self.config_problem = None
        except RulesError as e:
            # A bad override costs only itself: the run is watched with the defaults, and
            # alert_config_invalid says which key was refused.
            self.config, self.config_problem = self.base_config, str(e)
        th = self.th = resolve_thresholds(self.config, run.info, self.meaning)
        row_detectors = (build(self.config, th) for build in ROW_RULES.values())
        block_rules = (build(self.config, th) for build in BLOCK_RULES.values())
        self._row_detectors = [d for d in row_detectors if d is not None]
        self._block_rules = [r for r in block_rules if r is not None]
        extra = {c for r in self._block_rules for c in r.columns} - set(BLOCK_SERIES)
        self._fill.update({name: ForwardFill() for name in sorted(extra)})

    # -- feeding ----------------------------------------------------------------------------

    def _feed(self, run: Run, new: slice) -> None:
        assert self.th is not None  # set by _start
        logged = frozenset(run.series_names)
        length = self.config.band.length_column
        names = {*self._fill, length}.union(*(d.columns for d in self._row_detectors))
        count = new.stop - new.start
        # run.column() of a never-logged series allocates the whole run: O(n), not O(new);
        # its all-NaN batch is made only if a detector reads it.
        raw = MissingAsNaN(count)
        raw.update({name: run.column(name)[new] for name in sorted(names) if name in logged})
        steps = run.steps[new]
        per_token = per_token_divisor(self.th, self.config.band, raw[length])
        rows = Rows(steps, raw, per_token, logged, self.meaning)
        for detector in self._row_detectors:
            detector.feed(rows, self._log)
        filled = {
            BLOCK_SERIES.get(name, name): fill(raw[name]) for name, fill in self._fill.items()
        }
        self._feed_blocks(
            {
                "step": steps.astype(np.float64),
                "level": filled["native"] / per_token,
                **filled,
            }
        )

    def _feed_blocks(self, rows: dict[str, np.ndarray]) -> None:
        """Complete blocks of `block_rows` rows (aligned to the run's first row) from the
        pending rows and these; judge them; keep the rest pending."""
        b = self.config.block_rows
        joined = {
            k: np.concatenate((self._pending[k], v)) if self._pending else v
            for k, v in rows.items()
        }
        n_full = joined["step"].size // b
        self._pending = {k: v[n_full * b :].copy() for k, v in joined.items()}
        if n_full == 0:
            return
        matrices = {k: v[: n_full * b].reshape(n_full, b) for k, v in joined.items()}
        blocks = Blocks(block_stats(matrices), matrices)
        for rule in self._block_rules:
            rule.feed(blocks, self._log)
