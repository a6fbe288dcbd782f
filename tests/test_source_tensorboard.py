"""monitor.sources.tensorboard: TensorBoard event files read incrementally.

Every file here is written by the real libraries: tensorboard's RecordWriter / EventFileWriter
/ summary.Writer, and torch's SummaryWriter (what transformers' TensorBoardCallback and TRL
use). Fault injection takes such a file and cuts or corrupts its bytes.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from monitor.sources import RunLocation, locate_path, open_source, tensorboard_records
from monitor.sources.tensorboard import TensorBoardSource, peek_file_last_step
from monitor.table import SeriesTable

TAGS = ("train/kl", "train/reward", "train/loss", "train/beta")
WALL0 = 1.7e9


# -- writing real files -----------------------------------------------------------------------


def value(step: int, tag_index: int) -> float:
    return float(np.float32(0.01 * step + tag_index))  # exact through simple_value's float32


def scalar_events(steps: Iterable[int], tags: Iterable[str] = TAGS) -> Iterator[event_pb2.Event]:
    """One event per scalar, as torch's SummaryWriter.add_scalar writes them."""
    tags = tuple(tags)
    for step in steps:
        for i, tag in enumerate(tags):
            event = event_pb2.Event(wall_time=WALL0 + step + i / 10, step=step)
            event.summary.value.add(tag=tag, simple_value=value(step, i))
            yield event


def write_events(path: Path, events: Iterable[event_pb2.Event], *, header: bool = True) -> Path:
    """Append events through tensorboard's RecordWriter (the framing EventFileWriter uses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        writer = RecordWriter(f)
        if header:
            first = event_pb2.Event(wall_time=WALL0, file_version="brain.Event:2")
            writer.write(first.SerializeToString())
        for event in events:
            writer.write(event.SerializeToString())
        writer.flush()
    return path


def events_file(directory: Path, n: int = 0) -> Path:
    """A file name as EventFileWriter makes it; larger `n` sorts later."""
    return directory / f"events.out.tfevents.{1700000000 + n}.host.4242.0"


def record_offsets(data: bytes) -> list[int]:
    """Start of each record in a real file (and its end as the last entry)."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<Q", data, pos)[0]
    return [*offsets, pos]


def source_for(directory: Path, stale_seconds: float = 3600.0) -> TensorBoardSource:
    source = TensorBoardSource(RunLocation("tensorboard", directory))
    source.stale_seconds = stale_seconds  # tests decide when a row is "finished"
    return source


class Loaded:
    """A source read into a SeriesTable, as monitor.run.Run does."""

    def __init__(self, directory: Path, stale_seconds: float = 3600.0) -> None:
        self.source = source_for(directory, stale_seconds)
        self.table = SeriesTable()
        self.skipped = 0
        self.problems: list[str] = []
        self.resets: list[str] = []

    def read(self) -> Loaded:
        got = self.source.read()
        if got.reset:
            self.resets.append(got.reset)
            self.table.clear()
        self.skipped += got.skipped
        self.problems += [str(p) for p in got.problems]
        for block in got.blocks:
            self.table.append(block)
        return self

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name)


def expected(steps: Iterable[int], tag_index: int) -> np.ndarray:
    return np.array([value(s, tag_index) for s in steps])


# -- layout, names, metadata --------------------------------------------------------------------


def test_locate_only_directories_holding_event_files(tmp_path: Path) -> None:
    run = tmp_path / "out" / "runs" / "Nov25_10-00-00_host"
    write_events(events_file(run), scalar_events(range(3)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "events.txt").write_text("no")
    assert locate_path(tmp_path) == [RunLocation("tensorboard", run)]
    assert locate_path(tmp_path / "other") == []


def test_torch_summary_writer_with_transformers_args(tmp_path: Path) -> None:
    """What transformers' TensorBoardCallback writes: add_text("args", json), add_scalar."""
    from torch.utils import tensorboard

    run = tmp_path / "grpo-out" / "runs" / "Nov25_10-00-00_host"
    writer = tensorboard.SummaryWriter(log_dir=str(run))
    writer.add_text("args", json.dumps({"output_dir": "grpo-out", "beta": 0.04}, indent=2))
    for step in (1, 2, 3):
        writer.add_scalar("train/kl", 0.01 * step, step)
        writer.add_scalar("train/reward", 0.5 + step, step)
    writer.close()

    source = open_source(RunLocation("tensorboard", run))
    assert source.label == "TensorBoard"
    assert source.info["name"] == "grpo-out/Nov25_10-00-00_host"
    assert source.refresh_info() is True  # the first call
    got = source.read()
    assert source.info["config"]["beta"] == 0.04
    assert source.refresh_info() is True and source.refresh_info() is False
    (block,) = got.blocks
    assert block.steps.tolist() == [1, 2, 3]
    np.testing.assert_allclose(block.columns["train/kl"], [0.01, 0.02, 0.03], rtol=1e-6)
    assert set(block.columns) == {"time", "train/kl", "train/reward"}
    assert block.columns["time"][0] == pytest.approx(time.time(), abs=300)
    assert got.skipped == 0 and not got.problems


def test_name_outside_a_runs_layout_and_bad_args_text(tmp_path: Path) -> None:
    run = tmp_path / "my-run"
    text = event_pb2.Event(wall_time=WALL0)
    tensor = tensor_util.make_tensor_proto(np.array([b"not json {"], dtype=object))
    args = text.summary.value.add(tag="args/text_summary", tensor=tensor)
    args.metadata.plugin_data.plugin_name = "text"
    write_events(events_file(run), [text, *scalar_events(range(2))])
    source = source_for(run)
    source.read()
    assert source.info["name"] == "my-run"
    assert "config" not in source.info
    assert source.info_problem is not None and "not JSON" in source.info_problem


# -- values -------------------------------------------------------------------------------------


def test_more_than_10000_points_per_tag_are_kept(tmp_path: Path) -> None:
    # EventAccumulator keeps 10,000 per tag by default; we keep them all.
    run = tmp_path / "run"
    write_events(events_file(run), scalar_events(range(20_000), TAGS[:1]))
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.n == 20_000
    np.testing.assert_array_equal(loaded.table.steps, np.arange(20_000))
    np.testing.assert_array_equal(loaded.column("train/kl"), expected(range(20_000), 0))
    np.testing.assert_allclose(loaded.column("time"), WALL0 + np.arange(20_000))


def test_tensor_scalars_from_tensorboards_own_writer(tmp_path: Path) -> None:
    """tensorboard.summary.Writer (no TensorFlow needed) writes tensors, plugin "scalars"."""
    from tensorboard.summary import Writer

    run = tmp_path / "run"
    writer = Writer(str(run))
    for step in range(3):
        writer.add_scalar("loss", 1.5 + step, step=step, wall_time=WALL0 + step)
        writer.add_scalar("kl", 0.25 * step, step=step, wall_time=WALL0 + step)
    writer.close()
    # Other dtypes and a bytes-encoded scalar, the way tf2 summaries may store them.
    extra = []
    for tag, array in (
        ("double", np.float64(2.5)),
        ("half", np.float16(0.5)),
        ("int64", np.int64(7)),
        ("int32", np.int32(-3)),
        ("content", np.array([4.25], dtype=np.float32)),  # one element, shape [1]
        ("vector", np.array([1.0, 2.0])),  # not a scalar: ignored
    ):
        event = event_pb2.Event(wall_time=WALL0 + 3, step=3)
        proto = tensor_util.make_tensor_proto(array)
        if tag == "content":
            proto.tensor_content = array.tobytes()
            del proto.float_val[:]
        event.summary.value.add(tag=tag, tensor=proto)
        extra.append(event)
    histogram = event_pb2.Event(wall_time=WALL0 + 3, step=3)
    histogram.summary.value.add(tag="hist", histo=summary_pb2.HistogramProto(num=3, sum=1.0))
    extra.append(histogram)
    writer = EventFileWriter(str(run))
    for event in extra:
        writer.add_event(event)
    writer.close()

    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.steps.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(loaded.column("loss")[:3], [1.5, 2.5, 3.5])
    np.testing.assert_array_equal(loaded.column("kl")[:3], [0.0, 0.25, 0.5])
    row = {name: loaded.column(name)[3] for name in ("double", "half", "int64", "int32")}
    assert row == {"double": 2.5, "half": 0.5, "int64": 7.0, "int32": -3.0}
    assert loaded.column("content")[3] == 4.25
    assert "vector" not in loaded.table.names and "hist" not in loaded.table.names


def test_mixed_events_keep_file_order(tmp_path: Path) -> None:
    """simple_value events (fast path) and tensor / multi-value events (one by one)."""
    run = tmp_path / "run"
    events = []
    for step in range(4):
        plain = event_pb2.Event(wall_time=WALL0 + step, step=step)
        plain.summary.value.add(tag="a", simple_value=float(step))
        tensor = event_pb2.Event(wall_time=WALL0 + step, step=step)
        tensor.summary.value.add(tag="b", tensor=tensor_util.make_tensor_proto(np.float64(step)))
        both = event_pb2.Event(wall_time=WALL0 + step + 0.5, step=step)
        both.summary.value.add(tag="c", simple_value=10.0 + step)
        both.summary.value.add(tag="d", simple_value=20.0 + step)
        events += [plain, tensor, both] if step % 2 else [tensor, both, plain]
    named = event_pb2.Event(wall_time=WALL0 + 9, step=4)
    named.summary.value.add(tag="time", simple_value=1.0)  # not the row's own time column
    write_events(events_file(run), [*events, named])
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.steps.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(loaded.column("a")[:4], [0, 1, 2, 3])
    np.testing.assert_array_equal(loaded.column("b")[:4], [0, 1, 2, 3])
    np.testing.assert_array_equal(loaded.column("d")[:4], [20, 21, 22, 23])
    np.testing.assert_array_equal(loaded.column("time")[:4], WALL0 + np.arange(4) + 0.5)
    assert loaded.column("time (tag)")[4] == 1.0


def test_values_like_the_column_views_marks_are_read_right(tmp_path: Path) -> None:
    """The fast path marks events with values no writer produces; if one does, the block is
    decoded event by event and nothing changes."""
    run = tmp_path / "run"
    odd = []
    for step, tag, number in (
        (1, "a", 1.0),
        (2**63 - 1, "a", 2.0),  # the largest step: one of the marks
        (2**63 - 1, "b", struct.unpack("<f", b"\xff\xff\xff\xff")[0]),  # a NaN bit pattern
    ):
        event = event_pb2.Event(wall_time=WALL0, step=step)
        event.summary.value.add(tag=tag, simple_value=number)
        odd.append(event)
    with_metadata = event_pb2.Event(wall_time=WALL0, step=3)
    described = with_metadata.summary.value.add(tag="m", simple_value=5.0)
    described.metadata.summary_description = "not part of the fast path's shape"
    write_events(events_file(run), [odd[0], with_metadata, *odd[1:]])
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.steps.tolist() == [1, 3, 2**63 - 1]
    assert loaded.column("m")[1] == 5.0 and loaded.column("a")[2] == 2.0
    assert np.isnan(loaded.column("b")[2]) and loaded.skipped == 0


# -- growing files ------------------------------------------------------------------------------


def real_file(tmp_path: Path, steps: Iterable[int], tags: Iterable[str] = TAGS) -> bytes:
    return write_events(events_file(tmp_path / "scratch"), scalar_events(steps, tags)).read_bytes()


def test_any_cut_inside_the_last_records_is_held_back(tmp_path: Path) -> None:
    data = real_file(tmp_path, range(6))
    offsets = record_offsets(data)
    one_shot = Loaded(tmp_path / "scratch", stale_seconds=0.0).read().table
    run = tmp_path / "run"
    run.mkdir()
    path = events_file(run)
    # Every byte of the last two records (length, length CRC, data, data CRC).
    for cut in range(offsets[-3], len(data)):
        path.write_bytes(data[:cut])
        loaded = Loaded(run).read()
        assert loaded.skipped == 0 and not loaded.problems, cut
        assert loaded.table.n == 5  # step 5 lacks a scalar or two: held back
        with open(path, "ab") as f:
            f.write(data[cut:])
        loaded.read()
        assert loaded.skipped == 0 and not loaded.problems
        np.testing.assert_array_equal(loaded.table.steps, one_shot.steps)
        for tag in TAGS:
            np.testing.assert_array_equal(loaded.column(tag), one_shot.column(tag))
        assert loaded.table.generation == 0, cut  # never a rewrite


def test_partial_step_is_held_then_completed_without_a_rewrite(tmp_path: Path) -> None:
    data = real_file(tmp_path, range(8))
    offsets = record_offsets(data)  # record 0 is the file header; step s, tag i: 1 + 4s + i
    run = tmp_path / "run"
    run.mkdir()
    path = events_file(run)
    path.write_bytes(data[: offsets[1 + 4 * 5 + 2]])  # step 5 has two of its four tags
    loaded = Loaded(run).read()
    assert loaded.table.steps.tolist() == [0, 1, 2, 3, 4]  # step 5 is held back
    assert loaded.source.peek_last_step() == 5
    with open(path, "ab") as f:
        f.write(data[offsets[1 + 4 * 5 + 2] : offsets[1 + 4 * 6]])  # the rest of step 5
    loaded.read()
    # Its tags now cover the previous row's: emitted at once, complete, in place.
    assert loaded.table.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert [loaded.column(tag)[5] for tag in TAGS] == [value(5, i) for i in range(4)]
    with open(path, "ab") as f:
        f.write(data[offsets[1 + 4 * 6] :])
    loaded.read()
    assert loaded.table.steps.tolist() == list(range(8))
    assert loaded.table.generation == 0


def test_an_open_step_is_emitted_once_the_files_are_quiet(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(3)))
    write_events(path, scalar_events([3], TAGS[:2]), header=False)  # last step: 2 of 4 tags
    loaded = Loaded(run, stale_seconds=30.0).read()
    assert loaded.table.n == 3
    stamp = loaded.source.stamp()
    assert loaded.read().table.n == 3  # still fresh: nothing new
    past = time.time() - 60
    os.utime(path, (past, past))
    loaded.read()
    assert loaded.table.steps.tolist() == [0, 1, 2, 3]
    assert np.isnan(loaded.column("train/loss")[3]) and loaded.column("train/kl")[3] == value(3, 0)
    assert loaded.source.stamp() != stamp
    assert loaded.table.generation == 0


def test_stamp_changes_when_an_open_row_falls_due(tmp_path: Path) -> None:
    """A caller that reads only when stamp() changes still gets the held row."""
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(3)))
    write_events(path, scalar_events([3], TAGS[:2]), header=False)
    loaded = Loaded(run, stale_seconds=30.0).read()
    stamp = loaded.source.stamp()
    assert loaded.source.stamp() == stamp and loaded.table.n == 3
    loaded.source.stale_seconds = 0.0  # as if 30 s went by without growth
    due = loaded.source.stamp()
    assert due != stamp
    assert loaded.read().table.n == 4
    assert loaded.source.stamp() != due  # nothing held any more


def test_late_tags_for_an_emitted_step_supersede_that_row_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(10)))
    loaded = Loaded(run, stale_seconds=30.0).read()
    assert loaded.table.n == 10  # the last step covers the one before: emitted
    summary = event_pb2.Event(wall_time=WALL0 + 99, step=9)
    summary.summary.value.add(tag="train/train_runtime", simple_value=123.0)
    write_events(path, [summary], header=False)
    loaded.read()
    assert loaded.table.generation == 0  # held: more of step 9 may come
    past = time.time() - 60
    os.utime(path, (past, past))
    loaded.read()
    assert loaded.table.n == 10 and loaded.table.generation == 1
    assert loaded.column("train/train_runtime")[9] == 123.0
    assert loaded.column("train/kl")[9] == value(9, 0)  # merged, not replaced
    assert loaded.column("time")[9] == WALL0 + 99


def test_a_tag_repeated_at_the_same_step_is_a_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    again = event_pb2.Event(wall_time=WALL0 + 50, step=3)
    again.summary.value.add(tag="train/kl", simple_value=-1.0)
    write_events(events_file(run), [*scalar_events(range(4)), again])
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.steps.tolist() == [0, 1, 2, 3]
    assert loaded.column("train/kl")[3] == -1.0
    assert np.isnan(loaded.column("train/reward")[3])  # the new segment starts afresh
    assert loaded.table.superseded_rows == 1


def transformers_log(step: int, logs: dict[str, float]) -> list[event_pb2.Event]:
    """What TensorBoardCallback.on_log writes: one event per key, `epoch` in every call."""
    events = []
    for tag, number in logs.items():
        event = event_pb2.Event(wall_time=WALL0 + step, step=step)
        event.summary.value.add(tag=tag, simple_value=number)
        events.append(event)
    return events


def test_epoch_logged_again_with_eval_and_summary_is_the_same_row(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = events_file(run)
    train = {"train/loss": 0.5, "train/kl": 0.25, "train/epoch": 0.5}
    write_events(path, transformers_log(1, train) + transformers_log(2, train))
    loaded = Loaded(run, stale_seconds=30.0).read()
    assert loaded.table.steps.tolist() == [1, 2]  # step 2 covers step 1: emitted
    # Evaluation at the same global step, then the end-of-training summary: both repeat
    # train/epoch with the same value.
    evaluation = transformers_log(2, {"eval/kl": 0.125, "train/epoch": 0.5})
    summary = transformers_log(2, {"train/train_runtime": 9.0, "train/epoch": 0.5})
    write_events(path, evaluation + summary, header=False)
    past = time.time() - 60
    os.utime(path, (past, past))
    loaded.read()
    assert loaded.table.steps.tolist() == [1, 2]
    names = ("train/kl", "eval/kl", "train/train_runtime", "train/epoch")
    assert [loaded.column(name)[1] for name in names] == [0.25, 0.125, 9.0, 0.5]
    assert loaded.table.generation == 1  # row 2 superseded once by its fuller self
    assert loaded.table.superseded_rows == 1


def test_resume_in_a_second_file(tmp_path: Path) -> None:
    """A restarted trainer writes a new file in the same directory, from its checkpoint."""
    run = tmp_path / "run"
    first = write_events(events_file(run, 0), scalar_events(range(10)))
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.n == 10
    resumed = [*scalar_events(range(6, 14), TAGS[:2])]
    for event in resumed:
        event.summary.value[0].simple_value = 100 + event.step
    write_events(events_file(run, 1), resumed)
    loaded.read()
    assert loaded.table.steps.tolist() == list(range(14))
    assert loaded.column("train/kl")[5] == value(5, 0)
    assert loaded.column("train/kl")[6] == 106
    assert np.isnan(loaded.column("train/loss")[6])  # superseded from step 6 on
    assert loaded.table.generation == 1
    # The old file is finished: TensorBoard ignores later writes to it, and so do we.
    write_events(first, scalar_events([99]), header=False)
    loaded.read()
    assert loaded.table.n == 14
    assert any("after a newer events file started" in p for p in loaded.problems)


def test_a_new_file_is_followed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_events(events_file(run, 0), scalar_events(range(5)))
    loaded = Loaded(run, stale_seconds=0.0).read()
    write_events(events_file(run, 1), scalar_events(range(5, 9)))
    loaded.read()
    assert loaded.table.steps.tolist() == list(range(9))
    assert loaded.table.generation == 0
    np.testing.assert_array_equal(loaded.column("train/beta"), expected(range(9), 3))
    # A file that sorts before those read appears late: ignored, as TensorBoard does.
    write_events(events_file(run, -1), scalar_events(range(100, 103)))
    loaded.read()
    assert loaded.table.n == 9 and loaded.skipped == 0
    assert any("appeared after a newer events file" in p for p in loaded.problems)


# -- corruption ---------------------------------------------------------------------------------


def corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_bad_data_crc_skips_that_record_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(10)))
    offsets = record_offsets(path.read_bytes())
    bad = offsets[1 + 4 * 4 + 1]  # step 4, train/reward
    corrupt(path, bad + 14)  # inside its data
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.skipped == 1
    assert loaded.problems == [f"{path.name}: bad CRC at byte {bad}: record skipped"]
    assert loaded.table.steps.tolist() == list(range(10))
    assert np.isnan(loaded.column("train/reward")[4])
    assert loaded.column("train/loss")[4] == value(4, 2)
    np.testing.assert_array_equal(loaded.column("train/kl"), expected(range(10), 0))
    # Also the CRC bytes themselves.
    corrupt(path, offsets[1 + 4 * 6] - 1)  # last byte of step 5's train/beta record
    again = Loaded(run, stale_seconds=0.0).read()
    assert again.skipped == 2 and np.isnan(again.column("train/beta")[5])


def test_bad_length_crc_skips_to_the_next_valid_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(10)))
    offsets = record_offsets(path.read_bytes())
    bad = offsets[1 + 4 * 3 + 2]  # step 3, train/loss
    corrupt(path, bad + 1)  # its length: cannot be trusted, the framing is lost
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.skipped == 1
    assert loaded.problems == [
        f"{path.name}: bad length CRC at byte {bad}: skipped to the next record"
    ]
    assert loaded.table.steps.tolist() == list(range(10))
    assert np.isnan(loaded.column("train/loss")[3])  # only that record is lost
    assert loaded.column("train/beta")[3] == value(3, 3)
    np.testing.assert_array_equal(loaded.column("train/kl"), expected(range(10), 0))


def test_garbage_at_the_end_then_valid_records(tmp_path: Path) -> None:
    """A writer that died mid-write and a new one appending: wait, then resynchronise."""
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(5)))
    with open(path, "ab") as f:
        f.write(b"\x07" * 40)  # not a valid header anywhere
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.n == 5 and loaded.skipped == 1
    assert "bad length CRC" in loaded.problems[0]
    write_events(path, scalar_events(range(5, 8)), header=False)
    loaded.read()
    assert loaded.table.steps.tolist() == list(range(8))
    assert loaded.skipped == 1  # reported once


def test_records_across_read_blocks_and_a_bounded_resync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(20)))
    offsets = record_offsets(path.read_bytes())
    corrupt(path, offsets[1 + 4 * 7] + 3)  # step 7's train/kl: bad length CRC
    corrupt(path, offsets[1 + 4 * 12 + 3] + 20)  # step 12's train/beta: bad data CRC
    one_shot = Loaded(run, stale_seconds=0.0).read()
    monkeypatch.setattr(tensorboard_records, "READ_BLOCK_BYTES", 64)  # records span blocks
    monkeypatch.setattr(tensorboard_records, "RESYNC_SCAN_BYTES", 16)  # several reads
    small = Loaded(run, stale_seconds=0.0)
    reads = 0
    while small.table.n < 20 and reads < 10:
        small.read()
        reads += 1
    assert reads > 1  # the search for the next record went on over several reads
    assert small.skipped == one_shot.skipped == 2
    assert small.problems == one_shot.problems
    np.testing.assert_array_equal(small.table.steps, np.arange(20))
    for tag in TAGS:
        np.testing.assert_array_equal(small.column(tag), one_shot.column(tag))
    assert np.isnan(small.column("train/kl")[7]) and np.isnan(small.column("train/beta")[12])


def test_a_torn_record_before_a_newer_file_is_dropped(tmp_path: Path) -> None:
    """The trainer died mid-write; the restarted one writes a new file."""
    run = tmp_path / "run"
    data = real_file(tmp_path, range(5))
    first = events_file(run, 0)
    run.mkdir()
    first.write_bytes(data[:-7])  # step 4's last record is cut
    loaded = Loaded(run, stale_seconds=0.0).read()
    write_events(events_file(run, 1), scalar_events(range(4, 8)))
    loaded.read()
    assert loaded.skipped == 1 and "incomplete record" in loaded.problems[0]
    assert loaded.table.steps.tolist() == list(range(8))
    assert loaded.column("train/beta")[4] == value(4, 3)  # from the new file


def test_problems_are_capped_but_all_skips_counted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(100)))
    data = bytearray(path.read_bytes())
    offsets = record_offsets(bytes(data))
    for start in offsets[1:-1][:300]:
        data[start + 13] ^= 0xFF
    path.write_bytes(bytes(data))
    got = source_for(run, 0.0).read()
    assert got.skipped == 300
    assert len(got.problems) == 200


def test_truncated_or_replaced_file_resets(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(10)))
    data = path.read_bytes()
    offsets = record_offsets(data)
    loaded = Loaded(run, stale_seconds=0.0).read()
    assert loaded.table.n == 10
    path.write_bytes(data[: offsets[1 + 4 * 4]])  # truncated in place: steps 0-3 remain
    loaded.read()
    assert loaded.resets and "shrank" in loaded.resets[-1]
    assert loaded.table.steps.tolist() == [0, 1, 2, 3]
    replacement = write_events(tmp_path / "new" / path.name, scalar_events(range(20, 23)))
    os.replace(replacement, path)  # a new inode, same name
    loaded.read()
    assert "replaced" in loaded.resets[-1]
    assert loaded.table.steps.tolist() == [20, 21, 22]
    path.unlink()
    loaded.read()
    assert "deleted" in loaded.resets[-1] and loaded.table.n == 0


def test_missing_directory_raises_and_empty_directory_reads_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        source_for(tmp_path / "nope").read()
    (tmp_path / "empty").mkdir()
    source = source_for(tmp_path / "empty")
    assert source.read().blocks == []
    assert source.last_write_time() is None and source.peek_last_step() is None


# -- cheap probes -------------------------------------------------------------------------------


def test_peek_last_step_reads_only_the_tail(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(3000), TAGS[:2]))
    assert path.stat().st_size > 100_000  # more than the window
    assert peek_file_last_step(path) == 2999
    assert source_for(run).peek_last_step() == 2999
    small = write_events(events_file(tmp_path / "small"), scalar_events(range(2)))
    assert peek_file_last_step(small) == 1


def test_stamp_and_last_write_time_follow_the_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_events(events_file(run), scalar_events(range(3)))
    source = source_for(run)
    stamp = source.stamp()
    assert source.last_write_time() == pytest.approx(path.stat().st_mtime)
    assert source.stamp() == stamp
    write_events(path, scalar_events([3]), header=False)
    assert source.stamp() != stamp
