"""Source readers benchmark: TensorBoard event files (then trackio, if its bench exists).

Prints, measured in this run (these machines are noisy: compare ratios, not seconds):
  * cold load of a TensorBoard run of --steps steps x --tags tags, one event per scalar
    (as torch's SummaryWriter writes them): TensorBoardSource.read() + SeriesTable vs
    tensorboard's EventAccumulator with no size limit (goal: >= 5x faster)
  * the refresh after appending --append steps to a 1k-step run and to the large run
    (goal: same cost, ratio <= 1.5): reading is O(new bytes), not O(file)

The event files are written by tensorboard's RecordWriter, the record writer inside its
EventFileWriter (without EventFileWriter's writer thread, whose hand-off costs ~100 µs an
event: 1.2M events would take minutes). Nothing is cached: files go to a temporary dir.
Then a run in a bucket (benchmarks/_bucket_bench.py): 1M steps of metrics.jsonl on a local S3
server, refreshed after +100 lines reading only the new bytes. Then W&B
(benchmarks/_wandb_bench.py: 100k steps x 30 metrics written by the real wandb, offline) and
MLflow (benchmarks/_mlflow_bench.py: a 100k-step x 30-key SQLite store, and a 50 Hz writer
timed while klwatch reads): cold read, refresh after +100 steps vs a 1k-step run.
Usage: python benchmarks/bench_sources.py [--steps 300000] [--tags 4] [--append 100]
       [--no-baseline] [--skip-wandb] [--skip-mlflow] [--wandb-steps 100000]
       [--mlflow-steps 100000] [--mlflow-seconds 20]
       (other options go to benchmarks/_trackio_bench.py, if present)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tensorboard.compat.proto import event_pb2  # noqa: E402
from tensorboard.summary.writer.record_writer import RecordWriter  # noqa: E402

from benchmarks._common import best_of  # noqa: E402
from monitor.sources.base import RunLocation  # noqa: E402
from monitor.sources.tensorboard import TensorBoardSource  # noqa: E402
from monitor.table import SeriesTable  # noqa: E402

TAG_NAMES = ("train/kl", "train/reward", "train/loss", "train/beta", "train/entropy")


def tags_for(count: int) -> list[str]:
    return [TAG_NAMES[i] if i < len(TAG_NAMES) else f"train/extra_{i}" for i in range(count)]


def append_steps(path: Path, start: int, count: int, tags: list[str], *, header: bool) -> None:
    """`count` steps from `start`, one event per scalar, through tensorboard's RecordWriter."""
    rng = np.random.default_rng(start)
    values = rng.lognormal(-3.0, 0.5, (count, len(tags))).tolist()
    # One Event per tag, reused: building 1.2M protos from scratch would double the time.
    templates = []
    for tag in tags:
        event = event_pb2.Event()
        templates.append((event, event.summary.value.add(tag=tag)))
    with open(path, "ab") as f:
        writer = RecordWriter(f)
        write = writer.write
        if header:
            first = event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2")
            write(first.SerializeToString())
        for i in range(count):
            step, row = start + i, values[i]
            for j, (event, value) in enumerate(templates):
                event.step, event.wall_time, value.simple_value = step, 1.7e9 + step, row[j]
                write(event.SerializeToString())
        writer.flush()


def make_run(directory: Path, steps: int, tags: list[str]) -> Path:
    directory.mkdir(parents=True)
    path = directory / "events.out.tfevents.1700000000.bench.1.0"
    append_steps(path, 0, steps, tags, header=True)
    return path


def load(directory: Path) -> tuple[TensorBoardSource, SeriesTable]:
    source = TensorBoardSource(RunLocation("tensorboard", directory))
    table = SeriesTable()
    for block in source.read().blocks:
        table.append(block)
    return source, table


def event_accumulator(directory: Path) -> object:
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(str(directory), size_guidance={ea.SCALARS: 0})
    accumulator.Reload()
    return accumulator


def check_same(table: SeriesTable, accumulator: object, tags: list[str]) -> None:
    for tag in tags:
        scalars = accumulator.Scalars(tag)  # type: ignore[attr-defined]
        steps = np.fromiter((s.step for s in scalars), dtype=np.int64, count=len(scalars))
        values = np.fromiter((s.value for s in scalars), dtype=np.float64, count=len(scalars))
        assert np.array_equal(steps, table.steps), tag
        assert np.array_equal(values, table.column(tag)), tag


def refresh_cost(directory: Path, path: Path, steps: int, tags: list[str], append: int) -> float:
    """Median time of read() + table.append after appending `append` steps (7 rounds)."""
    source, table = load(directory)
    next_step, times = steps, []
    for round_ in range(8):
        append_steps(path, next_step, append, tags, header=False)
        next_step += append
        t0 = time.perf_counter()
        for block in source.read().blocks:
            table.append(block)
        if round_:  # the first round warms up
            times.append(time.perf_counter() - t0)
    # The last step of each batch covers the one before: emitted at once, nothing held.
    assert table.n == next_step and table.generation == 0, (table.n, next_step)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--tags", type=int, default=4)
    parser.add_argument("--append", type=int, default=100)
    parser.add_argument("--no-baseline", action="store_true", help="skip EventAccumulator")
    parser.add_argument("--skip-wandb", action="store_true", help="skip the W&B benchmark")
    parser.add_argument("--skip-mlflow", action="store_true", help="skip the MLflow benchmark")
    parser.add_argument("--wandb-steps", type=int, default=100_000)
    parser.add_argument("--mlflow-steps", type=int, default=100_000)
    parser.add_argument("--mlflow-seconds", type=float, default=20.0, help="each 50 Hz phase")
    args, rest = parser.parse_known_args()  # the rest is for the trackio benchmark
    tags = tags_for(args.tags)
    events = args.steps * args.tags
    with tempfile.TemporaryDirectory() as tmp:
        big_dir, small_dir = Path(tmp) / "big", Path(tmp) / "small"
        t0 = time.perf_counter()
        big = make_run(big_dir, args.steps, tags)
        small = make_run(small_dir, 1000, tags)
        print(
            f"wrote {args.steps:,} steps x {args.tags} tags ({events:,} events, "
            f"{big.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s"
        )
        ours = best_of(lambda: load(big_dir), repeat=3)
        _, table = load(big_dir)
        assert table.n == args.steps, table.n
        line = f"cold load   TensorBoardSource {ours:.2f} s ({events / ours / 1e6:.2f} M events/s)"
        if not args.no_baseline:
            t0 = time.perf_counter()
            accumulator = event_accumulator(big_dir)
            baseline = time.perf_counter() - t0
            check_same(table, accumulator, tags)
            del accumulator
            line += (
                f" | EventAccumulator(SCALARS: 0) {baseline:.1f} s (once) | "
                f"{baseline / ours:.1f}x faster (goal >= 5x); same steps and values"
            )
        print(line)
        small_cost = refresh_cost(small_dir, small, 1000, tags, args.append)
        big_cost = refresh_cost(big_dir, big, args.steps, tags, args.append)
        print(
            f"refresh     +{args.append} steps: 1k-step run {small_cost * 1e3:.2f} ms | "
            f"{args.steps // 1000}k-step run {big_cost * 1e3:.2f} ms | "
            f"ratio {big_cost / small_cost:.2f} (goal <= 1.5)"
        )
    trackio = Path(__file__).with_name("_trackio_bench.py")
    if trackio.exists():  # it parses its own options: the ones not taken here
        run_bench("_trackio_bench", ["--steps", str(args.steps), *rest])
    run_bench("_bucket_bench", sys.argv[1:])  # a 1M-step metrics.jsonl in a (local S3) bucket
    if not args.skip_wandb:  # the real wandb writes the runs (offline)
        run_bench("_wandb_bench", ["--steps", str(args.wandb_steps)])
    if not args.skip_mlflow:  # the real mlflow (SQLite store) writes the runs
        mlflow_args = ["--steps", str(args.mlflow_steps), "--seconds", str(args.mlflow_seconds)]
        run_bench("_mlflow_bench", mlflow_args)


def run_bench(name: str, argv: list[str]) -> None:
    """`benchmarks/<name>.py`'s main() with `argv` as its command line."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = sys.argv
    sys.argv = [str(path), *argv]  # it parses its own
    try:
        module.main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
