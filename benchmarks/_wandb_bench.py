"""W&B source benchmark: a run file of 100k steps x 30 metrics written by the real `wandb`
package (offline), read cold by klwatch, then refreshed after +100 steps — on the 100k-step
run and on a 1k-step run (ratio, goal <= 1.5: a refresh costs the new bytes, not the file).

Both runs are written by `wandb` itself, each in its own subprocess (WANDB_MODE=offline,
WANDB_DIR=<tmp>, WANDB_SILENT=true), logging the way transformers' WandbCallback does (no
`step=`, `train/global_step` in every row). Each writer logs its N steps, then, on a signal
file, 100 steps more per round, and finishes on the last signal: the refreshes read a live
file. wandb-core writes whole 32 KiB blocks while a run is live, so after each +100 steps
the reader waits until the file stops growing (the last partial block stays unwritten until
later: a refresh reads ~100 steps, +/- one block, printed). Nothing is asserted on time;
the rows and values read are checked against what was logged.

    .venv/bin/python benchmarks/_wandb_bench.py [--steps 100000] [--metrics 30] [--rounds 15]
(bench_sources.py runs it after the bucket figures.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:  # klwatch is imported by the reader only, never by the writer subprocess
    from monitor.run import Run

APPEND = 100
SMALL_STEPS = 1000
TRL_NAMES = (
    "train/kl",
    "train/reward",
    "train/loss",
    "train/grad_norm",
    "train/learning_rate",
    "train/reward_std",
    "train/entropy",
    "train/completions/mean_length",
    "train/clip_ratio/region_mean",
    "train/epoch",
)
STABLE_S = 0.3  # the file has not grown for this long: wandb-core wrote what it had
WAIT_S = 300.0


def metric_names(count: int) -> list[str]:
    return [TRL_NAMES[i] if i < len(TRL_NAMES) else f"train/extra_{i}" for i in range(count)]


def values_for(seed: int, total: int, metrics: int) -> np.ndarray:
    """What a writer logs: row i is global step i + 1 (reproducible in the reader)."""
    return np.random.default_rng(seed).lognormal(-3.0, 0.5, (total, metrics))


# -- the writer (a subprocess running the real wandb) ----------------------------------------


def writer(control: Path, steps: int, metrics: int, rounds: int, seed: int) -> None:
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(control), WANDB_SILENT="true")
    import wandb

    names = metric_names(metrics)
    values = values_for(seed, steps + rounds * APPEND, metrics).tolist()
    run = wandb.init(
        project="bench",
        name=control.name,
        config={"beta": 0.04, "learning_rate": 1e-6},
        settings=wandb.Settings(x_disable_stats=True, console="off"),
    )

    def log(first: int, count: int) -> None:
        for i in range(first, first + count):
            row = dict(zip(names, values[i], strict=True))
            row["train/global_step"] = i + 1
            run.log(row)  # no step: transformers' WandbCallback

    t0 = time.perf_counter()
    log(0, steps)
    (control / "logged-0").write_text(f"{time.perf_counter() - t0}\n{Path(run.dir).parent}")
    for r in range(1, rounds + 1):
        wait_for(control / f"go-{r}")
        log(steps + (r - 1) * APPEND, APPEND)
        (control / f"logged-{r}").write_text("")
    wait_for(control / "finish")
    run.finish()


def wait_for(path: Path, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never came")
        time.sleep(0.005)


# -- the reader (klwatch) --------------------------------------------------------------------


class Writer:
    """One wandb run being written in a subprocess, driven round by round."""

    def __init__(self, control: Path, steps: int, metrics: int, rounds: int, seed: int):
        control.mkdir(parents=True)
        self.control, self.steps, self.seed = control, steps, seed
        args = [str(control), str(steps), str(metrics), str(rounds), str(seed)]
        self.proc = subprocess.Popen([sys.executable, __file__, "--writer", *args])
        self.run_dir: Path | None = None
        self.write_s = 0.0

    def logged(self, round_: int) -> None:
        """Wait until round `round_` is logged and wandb-core stopped writing the file."""
        path = self.control / f"logged-{round_}"
        while not path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the wandb writer exited with {self.proc.returncode}")
            time.sleep(0.005)
        if round_ == 0:
            seconds, run_dir = path.read_text().split("\n", 1)
            self.write_s, self.run_dir = float(seconds), Path(run_dir)
        wait_stable(self.data_file)

    @property
    def data_file(self) -> Path:
        assert self.run_dir is not None
        return next(self.run_dir.glob("*.wandb"))

    def go(self, round_: int) -> None:
        (self.control / f"go-{round_}").write_text("")

    def finish(self) -> None:
        (self.control / "finish").write_text("")
        if self.proc.wait(timeout=WAIT_S):
            raise RuntimeError(f"the wandb writer exited with {self.proc.returncode}")


def wait_stable(path: Path) -> None:
    size, since = -1, time.monotonic()
    while time.monotonic() - since < STABLE_S:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        time.sleep(0.01)


def open_cold(run_dir: Path) -> tuple[Run, float]:
    from monitor.run import load_run
    from monitor.sources import locate_path

    (location,) = locate_path(run_dir, recursive=False)
    assert location.format == "wandb", location
    t0 = time.perf_counter()
    run = load_run(location)
    return run, time.perf_counter() - t0


def check_values(run: Run, seed: int, total: int, metrics: int) -> None:
    """Every step and value read is what the writer logged."""
    expected = values_for(seed, total, metrics)
    assert np.array_equal(run.steps, np.arange(1, total + 1)), (run.n_rows, total)
    for j, name in enumerate(metric_names(metrics)):
        assert np.array_equal(run.table.column(name), expected[:, j]), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15, help="refreshes timed (+1 warm-up)")
    args, _ = parser.parse_known_args()
    rounds = args.rounds + 1
    sizes = {"small": SMALL_STEPS, "big": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"wandb       writing {SMALL_STEPS:,} + {args.steps:,} steps ...", flush=True)
        writers = {
            name: Writer(Path(tmp) / name, steps, args.metrics, rounds, seed)
            for seed, (name, steps) in enumerate(sizes.items())
        }
        try:
            for w in writers.values():
                w.logged(0)
            big = writers["big"]
            mb = big.data_file.stat().st_size / 1e6
            print(
                f"wandb       wrote {args.steps:,} steps x {args.metrics} metrics (+ "
                f"train/global_step) with wandb.log in {big.write_s:.1f} s "
                f"({args.steps / big.write_s:,.0f} steps/s), {mb:.0f} MB so far (live run)"
            )
            runs: dict[str, Run] = {}
            for name, w in writers.items():
                assert w.run_dir is not None
                runs[name], seconds = open_cold(w.run_dir)
                if name == "big":
                    print(
                        f"wandb       cold read (live run, load_run → WandbSource): "
                        f"{runs[name].n_rows:,} rows in {seconds:.2f} s ({mb / seconds:.0f} MB/s)"
                    )
            times: dict[str, list[float]] = {name: [] for name in sizes}
            rows: dict[str, list[int]] = {name: [] for name in sizes}
            for r in range(1, rounds + 1):
                for w in writers.values():  # both runs grow, as in a sweep
                    w.go(r)
                for w in writers.values():
                    w.logged(r)
                order = list(runs) if r % 2 else list(runs)[::-1]  # neither always first
                for name in order:
                    run = runs[name]
                    before = run.n_rows
                    t0 = time.perf_counter()
                    run.refresh()
                    elapsed = time.perf_counter() - t0
                    if r > 1:  # the first round warms up
                        times[name].append(elapsed)
                        rows[name].append(run.n_rows - before)
            for w in writers.values():
                w.finish()
        finally:
            for w in writers.values():
                if w.proc.poll() is None:
                    w.proc.kill()
        for name, run in runs.items():  # the rest (the last partial block, the exit record)
            run.refresh()
            total = sizes[name] + rounds * APPEND
            check_values(run, writers[name].seed, total, args.metrics)
            assert run.info.get("status") == "finished", run.info
        med = {name: statistics.median(values) for name, values in times.items()}
        best = {name: min(values) for name, values in times.items()}
        new = {name: statistics.median(counts) for name, counts in rows.items()}
        print(
            f"wandb       refresh +{APPEND} steps (median of {args.rounds}; rows read per "
            f"refresh: median {new['small']:.0f} / {new['big']:.0f}, whole blocks): "
            f"1k-step run {med['small'] * 1e3:.2f} ms | {args.steps // 1000}k-step run "
            f"{med['big'] * 1e3:.2f} ms | ratio {med['big'] / med['small']:.2f} (goal <= 1.5)"
        )
        print(
            f"            best {best['small'] * 1e3:.2f} ms | {best['big'] * 1e3:.2f} ms | "
            f"ratio {best['big'] / best['small']:.2f}"
        )
        assert big.run_dir is not None
        size = big.data_file.stat().st_size / 1e6
        cold = []
        for _ in range(3):
            run, seconds = open_cold(big.run_dir)
            cold.append(seconds)
        total = args.steps + rounds * APPEND
        assert run.n_rows == total, run.n_rows
        print(
            f"wandb       cold read of the finished run ({total:,} rows, {size:.0f} MB): "
            f"best {min(cold):.2f} s, median {statistics.median(cold):.2f} s "
            f"({size / min(cold):.0f} MB/s, {total * args.metrics / min(cold) / 1e6:.1f} M "
            "values/s); every step and value checked equal to what was logged"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        control, steps, metrics, rounds, seed = sys.argv[2:7]
        writer(Path(control), int(steps), int(metrics), int(rounds), int(seed))
    else:
        main()
