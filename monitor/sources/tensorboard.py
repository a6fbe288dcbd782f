"""TensorBoard event files: torch's SummaryWriter (transformers, TRL), tensorboard's own writer.

A run is a directory that directly holds `events.out.tfevents.*` files (transformers and TRL
write `<output_dir>/runs/<date>_<host>/`). Each file is a TFRecord stream: uint64 length,
uint32 masked CRC32C of the length, the serialized `tensorboard.Event`, uint32 masked CRC32C
of the data. The protos are the ones the tensorboard package ships.

Reading rules (each has a test in tests/test_source_tensorboard.py):

* Files are read in name order (writers name them `…tfevents.<unix time>.<host>.<pid>.<n>`),
  as one stream. Once a newer file exists, the older ones are finished, as in TensorBoard:
  their later growth, and a new file whose name sorts before one already read, are ignored
  and reported once. A file that shrank, was replaced (other inode) or deleted voids what
  was read: `SourceRead.reset` says why and everything is read again from the start.
* Only new bytes are read: one byte offset per file. A record not fully written yet (its
  header, data or CRC missing) is held back and read once complete.
* A record whose data CRC is wrong is skipped and counted (`SourceRead.skipped`, one
  `Problem` each, capped per read); the records after it are read. A wrong length CRC means
  the length cannot be trusted, so the framing is lost: the reader searches forward for the
  next position where a record with both CRCs right starts (a false match needs two 32-bit
  CRCs to agree by chance), skips what lies between and reports it once. The search covers
  at most RESYNC_SCAN_BYTES per read and goes on in the next read. Never fatal.
* Scalars: `simple_value` (torch's default), or a numeric tensor holding one value (float,
  double, half, bfloat16, ints: tensorboard's own writer and tf2 summaries, plugin
  "scalars"). Histograms, images, audio and other non-scalar values are ignored. A tag's
  column is its name as written ("train/kl"); monitor.presets maps names. A tag named
  "time" or "step" becomes "time (tag)" / "step (tag)": those names are the row's own.
* Text: the `args` text (transformers' TensorBoardCallback writes the TrainingArguments
  JSON with `add_text("args", …)`, tag "args/text_summary") becomes `info["config"]`: that
  is where TRL's β (`beta`, or `kl_coef` for PPO) is found.
* Rows: one row per step with a column per tag, plus "time" (the latest wall time of the
  step's events). Events come one per scalar, so a step's row is assembled from the
  consecutive events of that step:
  - a different step (larger or smaller) starts a new row; a smaller or equal step is a
    resume, which supersedes the stored rows from that step on (monitor.table);
  - a tag repeated within the row with another value starts a new row at the same step: a
    real resume. With the same value it is the same row (transformers logs `epoch` again
    with the evaluation metrics and with the final summary of a step);
  - the newest row stays open (not emitted) while its step may still be being written. It
    is emitted when a later row starts, when its tags cover those of the row before it, or
    when the files have not grown for STALE_SECONDS (a finished run: at once). Emitting a
    half-written row and then the rest would look like a resume and make every consumer
    (alert engine, caches) start over;
  - tags that arrive later for the step of a row already emitted (the end-of-training
    `train_runtime` at the same global step; evaluation metrics logged after the training
    ones) are merged into that row, which is emitted again, once the step looks finished
    (a later step, or no growth for STALE_SECONDS): a rare resume that supersedes one row.

Speed: a run of 300k steps × 4 tags (1.2M events) loads ~25× faster than tensorboard's
EventAccumulator (benchmarks/bench_sources.py: 1.7 s vs 43 s on a 2-core VM). The only
per-record Python loop is framing; slicing and CRCs run through `map` over C functions, and
the events of a block are parsed by one protobuf call: their payloads are joined, each
preceded by a sentinel, and parsed as an `EventColumns` message whose fields carry Event's
field numbers but are repeated, so the parser appends each event's wall time, step, tag and
value to flat columns. The sentinels mark where each event's entries begin. An event goes
this fast way only if it is exactly {wall_time, step, summary{value{tag, simple_value}}}
(its entries counted per column and its byte length re-computed from them); anything else
(the file header, text, tensors, metadata, several values, odd encodings) is parsed on its
own with `event_pb2.Event`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import struct
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2

from monitor.sources.base import MAX_PROBLEMS_PER_READ, RunLocation, Source, SourceRead
from monitor.sources.parse import ParsedBlock, Problem
from monitor.sources.tail import open_regular

FORMAT = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."
STALE_SECONDS = 1.0  # no growth for this long: the newest step is finished
READ_BLOCK_BYTES = 8 << 20  # bytes read (and parsed in one protobuf call) at a time
RESYNC_SCAN_BYTES = 1 << 20  # per read, after a bad length CRC (~1 µs a byte)
PEEK_WINDOW_BYTES = 16384
ARGS_TAGS = ("args/text_summary", "args")  # torch's add_text adds "/text_summary"
TIME_COLUMN = "time"
_RESERVED_NAMES = frozenset({TIME_COLUMN, "step"})
IGNORED_OLDER_FILE = "appeared after a newer events file was read: ignored, as TensorBoard does"
IGNORED_GROWTH = "written to after a newer events file started: ignored, as TensorBoard does"
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length
_MASK_DELTA = 0xA282EAD8


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    if any(e.name.startswith(EVENTS_PREFIX) and _is_file(e) for e in entries):
        return [RunLocation(FORMAT, directory)]
    return []


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# -- the column view of Event ---------------------------------------------------------------


def _columns_message() -> type[Message]:
    """`EventColumns`: Event's wire format with repeated fields (see the module docstring).

    Field numbers come from tensorboard's descriptors; each declared type has the wire type
    of the real field (double → fixed64 bits, float → fixed32 bits, string → bytes).
    """
    event = event_pb2.Event.DESCRIPTOR.fields_by_name
    value = summary_pb2.Summary.Value.DESCRIPTOR.fields_by_name
    summary_value = summary_pb2.Summary.DESCRIPTOR.fields_by_name["value"]
    kind = descriptor_pb2.FieldDescriptorProto
    repeated, optional = kind.LABEL_REPEATED, kind.LABEL_OPTIONAL
    proto = descriptor_pb2.FileDescriptorProto(
        name="klwatch/tensorboard_columns.proto", package="klwatch_tb", syntax="proto3"
    )
    values = proto.message_type.add(name="ValueColumns")
    values.field.add(name="tag", number=value["tag"].number, type=kind.TYPE_BYTES, label=repeated)
    values.field.add(
        name="simple_value",
        number=value["simple_value"].number,
        type=kind.TYPE_FIXED32,
        label=repeated,
    )
    summary = proto.message_type.add(name="SummaryColumns")
    summary.field.add(  # singular: every event's values merge into one ValueColumns
        name="value",
        number=summary_value.number,
        type=kind.TYPE_MESSAGE,
        label=optional,
        type_name=".klwatch_tb.ValueColumns",
    )
    columns = proto.message_type.add(name="EventColumns")
    columns.field.add(
        name="wall_time",
        number=event["wall_time"].number,
        type=kind.TYPE_FIXED64,
        label=repeated,
    )
    columns.field.add(
        name="step", number=event["step"].number, type=kind.TYPE_INT64, label=repeated
    )
    columns.field.add(
        name="summary",
        number=event["summary"].number,
        type=kind.TYPE_MESSAGE,
        label=optional,
        type_name=".klwatch_tb.SummaryColumns",
    )
    pool = descriptor_pool.DescriptorPool()  # private: nothing added to the default pool
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("klwatch_tb.EventColumns")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # older protobuf


_EventColumns = _columns_message()
# Values no writer produces: a collision only makes the count of sentinels wrong, and then
# the whole block is parsed event by event.
_SENTINEL_WALL = 0xFFFFFFFFFFFFFFFF  # a NaN bit pattern
_SENTINEL_STEP = (1 << 63) - 1
_SENTINEL_TAG = b"\xff"  # not UTF-8: no valid tag
_SENTINEL_F32 = 0xFFFFFFFF  # a NaN bit pattern


def _sentinel() -> bytes:
    mark = _EventColumns()
    mark.wall_time.append(_SENTINEL_WALL)
    mark.step.append(_SENTINEL_STEP)
    mark.summary.value.tag.append(_SENTINEL_TAG)
    mark.summary.value.simple_value.append(_SENTINEL_F32)
    return mark.SerializeToString()


_SENTINEL = _sentinel()
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_FOUR = np.arange(4)

_NUMERIC_TENSOR_FIELDS: dict[int, tuple[str, str]] = {
    types_pb2.DT_FLOAT: ("float_val", "<f4"),
    types_pb2.DT_DOUBLE: ("double_val", "<f8"),
    types_pb2.DT_HALF: ("half_val", "<f2"),
    types_pb2.DT_BFLOAT16: ("half_val", "<u2"),  # top half of a float32
    types_pb2.DT_INT8: ("int_val", "<i1"),
    types_pb2.DT_INT16: ("int_val", "<i2"),
    types_pb2.DT_INT32: ("int_val", "<i4"),
    types_pb2.DT_UINT8: ("int_val", "<u1"),
    types_pb2.DT_UINT16: ("int_val", "<u2"),
    types_pb2.DT_INT64: ("int64_val", "<i8"),
    types_pb2.DT_UINT32: ("uint32_val", "<u4"),
    types_pb2.DT_UINT64: ("uint64_val", "<u8"),
}


def _varint_len(values: np.ndarray) -> np.ndarray:
    """Bytes of each value as a protobuf varint (negative int64: 10)."""
    as_unsigned = values.view(np.uint64) if values.dtype == np.int64 else values
    return np.searchsorted(_VARINT_LIMITS, as_unsigned, side="right") + 1


def tensor_scalar(tensor: Any) -> float | None:
    """The value of a numeric TensorProto holding exactly one element, else None."""
    spec = _NUMERIC_TENSOR_FIELDS.get(tensor.dtype)
    if spec is None or math.prod(d.size for d in tensor.tensor_shape.dim) != 1:
        return None
    name, dtype = spec
    if tensor.tensor_content:
        raw = np.frombuffer(tensor.tensor_content, dtype=dtype)
        if raw.size != 1:
            return None
        number = raw[0]
    else:
        values = getattr(tensor, name)
        if len(values) > 1:
            return None
        number = values[0] if values else 0  # TensorFlow's rule: no values means zeros
        if tensor.dtype == types_pb2.DT_HALF:
            number = np.uint16(number).view(np.float16)
    if tensor.dtype == types_pb2.DT_BFLOAT16:
        number = np.uint32(int(np.uint16(number)) << 16).view(np.float32)
    return float(number)


# -- per-file and per-read state ------------------------------------------------------------


@dataclass
class _FileState:
    name: str
    identity: tuple[int, int] | None = None  # (st_dev, st_ino)
    size: int = 0  # as seen by the previous read
    offset: int = 0  # first byte not consumed (a held-back record starts here)
    finished: bool = False  # a newer file exists: later growth is ignored, as TensorBoard does
    resyncing: bool = False  # lost the framing (bad length CRC): searching for a record
    noted_ignored: bool = False


@dataclass
class _OpenRow:
    """The newest row: kept to merge scalars of its step that arrive later."""

    step: int
    tags: np.ndarray  # int64 tag ids, distinct
    values: np.ndarray
    walls: np.ndarray
    emitted: bool  # a version of it was emitted
    dirty: bool  # it holds scalars not emitted yet


@dataclass
class _Stream:
    """Scalars of one read in file order, as chunks of arrays."""

    steps: list[np.ndarray] = field(default_factory=list)
    walls: list[np.ndarray] = field(default_factory=list)
    tags: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def add(self, steps: Any, walls: Any, tags: Any, values: Any) -> None:
        self.steps.append(np.asarray(steps, dtype=np.int64))
        self.walls.append(np.asarray(walls, dtype=np.float64))
        self.tags.append(np.asarray(tags, dtype=np.int64))
        self.values.append(np.asarray(values, dtype=np.float64))


class _Restart(Exception):
    """What was read before is void (a file shrank, was replaced or deleted)."""


class TensorBoardSource(Source):
    format = FORMAT
    label = "TensorBoard"

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.stale_seconds = STALE_SECONDS
        self.info = {"name": _run_name(self.path)}
        self._info_version = 1  # bumped whenever read() changes `info`
        self._info_seen = 0
        self._headers: dict[bytes, int] = {}  # valid 12-byte headers → record size
        self._tag_ids: dict[str, int] = {}
        self._tag_names: list[str] = []
        # Tags as the column view sees them (bytes) → id; ids in first-seen order.
        self._tag_bytes: defaultdict[bytes, int] = defaultdict(itertools.count().__next__)
        self._tag_bytes_lut: list[int] = []  # bytes id → tag id (-1: the sentinel)
        self._tag_bytes_len: list[int] = []
        self._plugins: dict[str, str] = {}  # tag → plugin named in its metadata
        self._reset_state()

    def _reset_state(self) -> None:
        self._files: dict[str, _FileState] = {}
        self._open: _OpenRow | None = None
        self._prev_tags: frozenset[int] = frozenset()  # tags of the row before the open one
        self._last_step: int | None = None
        self._last_growth = time.monotonic()

    # -- Source API -------------------------------------------------------------------------

    def read(self) -> SourceRead:
        out = SourceRead()
        for _ in range(3):  # a run rewritten while we read it: start over (bounded)
            try:
                self._read_into(out)
                break
            except _Restart as why:
                self._reset_state()
                out = SourceRead(reset=f"{why}: read again from the start")
        return out

    def refresh_info(self) -> bool:
        """True if `info` changed since the previous call (read() fills it from the events)."""
        changed = self._info_version != self._info_seen
        self._info_seen = self._info_version
        return changed

    def last_write_time(self) -> float | None:
        times = [st.st_mtime for _, st in self._stat_files()]
        return max(times) if times else None

    def peek_last_step(self) -> int | None:
        if self._last_step is not None:
            return self._last_step
        for name in reversed(self._list_files()):
            with contextlib.suppress(OSError):
                step = peek_file_last_step(self.path / name)
                if step is not None:
                    return step
        return None

    def stamp(self) -> tuple[Any, ...]:
        files = tuple((name, st.st_mtime_ns, st.st_size) for name, st in self._stat_files())
        # Flips when the open row becomes due, so a caller that reads only on a new stamp
        # still gets it emitted.
        return (files, self._open_row_due())

    # -- files ------------------------------------------------------------------------------

    def _list_files(self) -> list[str]:
        """Event file names in order; raises OSError if the directory cannot be listed."""
        with os.scandir(self.path) as it:
            return sorted(e.name for e in it if e.name.startswith(EVENTS_PREFIX) and _is_file(e))

    def _stat_files(self) -> Iterator[tuple[str, os.stat_result]]:
        try:
            names = self._list_files()
        except OSError:
            return
        for name in names:
            with contextlib.suppress(OSError):
                yield name, os.stat(self.path / name)

    def _read_into(self, out: SourceRead) -> None:
        names = self._list_files()
        gone = [name for name in self._files if name not in names]
        if gone:
            raise _Restart(f"{gone[0]} was deleted")
        stream = _Stream()
        newest = max(self._files) if self._files else None
        grew, mtime = False, 0.0
        for index, name in enumerate(names):
            state = self._files.get(name)
            if state is None:
                state = self._files[name] = _FileState(name)
                if newest is not None and name < newest:
                    # TensorBoard never reads a file that sorts before one it has read.
                    state.finished = state.noted_ignored = True
                    _note(out, name, IGNORED_OLDER_FILE, skipped=False)
            try:
                grew_now, file_mtime = self._read_file(state, stream, out)
            except FileNotFoundError:
                if state.identity is not None:
                    raise _Restart(f"{name} was deleted") from None
                del self._files[name]  # came and went between listing and opening
                continue
            except OSError as e:
                # What was read so far stays; the files after this one wait (order matters).
                _note(out, name, f"cannot read: {e.strerror or e}", skipped=False)
                break
            grew, mtime = grew or grew_now, max(mtime, file_mtime)
            if index < len(names) - 1 and not state.finished:
                self._finish(state, out)
        if grew:
            self._last_growth = time.monotonic()
        stale = self._is_stale(mtime)
        block = self._assemble(stream, stale)
        if block is not None:
            out.blocks.append(block)

    def _read_file(self, state: _FileState, stream: _Stream, out: SourceRead) -> tuple[bool, float]:
        """Read the new records of one file; returns (it grew, its mtime)."""
        path = self.path / state.name
        if state.finished:  # a stat is enough
            st = os.stat(path)
            grew = self._observe(state, st)
            if grew and state.offset < st.st_size and not state.noted_ignored:
                state.noted_ignored = True
                _note(out, state.name, IGNORED_GROWTH, skipped=False)
            return grew, st.st_mtime
        with open_regular(path, within=self.path) as f:  # no FIFO, no link out of the run
            st = os.fstat(f.fileno())
            grew = self._observe(state, st)
            if st.st_size - state.offset >= 16:
                f.seek(state.offset)
                self._read_records(f, st.st_size, state, stream, out)
        return grew, st.st_mtime

    @staticmethod
    def _observe(state: _FileState, st: os.stat_result) -> bool:
        """Note a file's stat; True if its size changed. Raises _Restart if it shrank or
        is another file under the same name."""
        identity = (st.st_dev, st.st_ino)
        if state.identity is not None and identity != state.identity:
            raise _Restart(f"{state.name} was replaced")
        if st.st_size < state.size:
            raise _Restart(f"{state.name} shrank")
        grew = st.st_size != state.size
        state.identity, state.size = identity, st.st_size
        return grew

    def _finish(self, state: _FileState, out: SourceRead) -> None:
        """A newer file exists: this one is complete; a record still held back never will be."""
        state.finished = True
        if state.offset < state.size and not state.resyncing:  # (a lost framing was reported)
            message = f"incomplete record at byte {state.offset}, and a newer file follows: dropped"
            _note(out, state.name, message)
        state.offset = state.size

    def _read_records(
        self, f: BinaryIO, size: int, state: _FileState, stream: _Stream, out: SourceRead
    ) -> None:
        base = state.offset  # file offset of buf[0]
        buf = f.read(min(READ_BLOCK_BYTES, size - base))
        pos = 0
        scan_budget = RESYNC_SCAN_BYTES
        while True:
            if state.resyncing:
                found = _resync(buf, pos, scan_budget)
                if found is None:
                    scanned = max(0, min(len(buf) - 11 - pos, scan_budget))
                    pos, scan_budget = pos + scanned, scan_budget - scanned
                    if scan_budget <= 0:
                        break  # the next read goes on from here
                else:
                    scan_budget -= found[0] - pos
                    pos, complete = found
                    state.resyncing = not complete  # if not, check it again once complete
            if not state.resyncing:
                starts, pos, bad = _frame(buf, pos, len(buf), self._headers)
                self._decode_records(buf, starts, pos, base, state.name, stream, out)
                if bad:
                    message = f"bad length CRC at byte {base + pos}: skipped to the next record"
                    _note(out, state.name, message)
                    state.resyncing = True
                    pos += 1
                    continue
            # `pos` is at the first record not fully in buf: read more, as much as it needs,
            # if the file holds it (a corrupt length must not make us allocate gigabytes).
            need = _record_size(buf, pos) - (len(buf) - pos)
            available = size - (base + len(buf))
            if available <= 0 or need > available:
                break
            more = f.read(min(max(READ_BLOCK_BYTES, need), available))
            if not more:
                break
            buf, base, pos = buf[pos:] + more, base + pos, 0
        state.offset = base + pos

    # -- records → scalars ------------------------------------------------------------------

    def _decode_records(
        self,
        buf: bytes,
        starts: list[int],
        end: int,
        base: int,
        file_name: str,
        stream: _Stream,
        out: SourceRead,
    ) -> None:
        """Check the data CRCs of the records starting at `starts` (the last one ends at
        `end`) and decode those that pass."""
        count = len(starts)
        if not count:
            return
        begin = np.asarray(starts, dtype=np.int64) + 12
        stop = np.empty(count, dtype=np.int64)  # where each one's data CRC starts
        stop[:-1] = begin[1:] - 16
        stop[-1] = end - 4
        payloads = list(map(buf.__getitem__, map(slice, begin.tolist(), stop.tolist())))
        crcs = np.fromiter(map(crc32c.crc32c, payloads), dtype=np.uint64, count=count)
        masked = (((crcs >> 15) | (crcs << 17)) + _MASK_DELTA) & 0xFFFFFFFF
        raw = np.frombuffer(buf, dtype=np.uint8)
        stored = raw[stop[:, None] + _FOUR].view("<u4").ravel()
        bad = np.flatnonzero(masked != stored)
        if bad.size:
            for i in bad.tolist():
                _note(out, file_name, f"bad CRC at byte {base + starts[i]}: record skipped")
            keep = np.ones(count, dtype=bool)
            keep[bad] = False
            payloads = [p for p, k in zip(payloads, keep.tolist(), strict=True) if k]
            begin, stop = begin[keep], stop[keep]
        if payloads:
            self._decode_payloads(payloads, stop - begin, file_name, stream, out)

    def _decode_payloads(
        self,
        payloads: list[bytes],
        lengths: np.ndarray,
        file_name: str,
        stream: _Stream,
        out: SourceRead,
    ) -> None:
        count = len(payloads)
        fast = self._decode_columns(payloads, lengths)
        if fast is None:
            slow_events = np.arange(count)
            fast_parts: tuple[np.ndarray, ...] = ()
        else:
            ok, steps, walls, tags, values = fast
            slow_events = np.flatnonzero(~ok)
            fast_parts = (np.flatnonzero(ok), steps[ok], walls[ok], tags[ok], values[ok])
        slow: tuple[list[int], list[int], list[float], list[int], list[float]] = (
            [],
            [],
            [],
            [],
            [],
        )
        for i in slow_events.tolist():
            self._decode_event(payloads[i], i, slow, file_name, out)
        if not slow[0]:
            if fast_parts:
                stream.add(*fast_parts[1:])
            return
        if not fast_parts:
            stream.add(*slow[1:])
            return
        # Both kinds in one block: put the scalars back in event order.
        order = np.argsort(np.concatenate([fast_parts[0], slow[0]]), kind="stable")
        stream.add(
            *(
                np.concatenate([part, np.asarray(extra)])[order]
                for part, extra in zip(fast_parts[1:], slow[1:], strict=True)
            )
        )

    def _decode_columns(
        self, payloads: list[bytes], lengths: np.ndarray
    ) -> tuple[np.ndarray, ...] | None:
        """All events of a block by one parse (module docstring). Returns (ok, step, wall,
        tag, value) per event, `ok` marking the events decoded here, or None if the block
        must be decoded event by event."""
        count = len(payloads)
        try:
            columns = _EventColumns.FromString(_SENTINEL + _SENTINEL.join(payloads))
        except DecodeError:
            return None
        walls_raw = np.array(columns.wall_time, dtype=np.uint64)
        steps_raw = np.array(columns.step, dtype=np.int64)
        value_columns = columns.summary.value
        floats_raw = np.array(value_columns.simple_value, dtype=np.uint32)
        tag_ids = self._tag_bytes
        tags_raw = np.fromiter(
            map(tag_ids.__getitem__, value_columns.tag),
            dtype=np.int64,
            count=len(value_columns.tag),
        )
        self._sync_tag_bytes()
        segments = []
        for raw, mark in (
            (walls_raw, _SENTINEL_WALL),
            (steps_raw, _SENTINEL_STEP),
            (tags_raw, tag_ids[_SENTINEL_TAG]),
            (floats_raw, _SENTINEL_F32),
        ):
            marks = np.flatnonzero(raw == mark)
            if marks.size != count:
                return None
            # entries of event i: raw[marks[i] + 1 : marks[i + 1]]
            counts = np.diff(np.append(marks, raw.size)) - 1
            first = np.minimum(marks + 1, raw.size - 1)
            segments.append((counts, raw[first]))
        (n_wall, wall_bits), (n_step, steps), (n_tag, tag_bytes_id), (n_value, value_bits) = (
            segments
        )
        steps = np.where(n_step == 1, steps, 0)  # proto3 leaves out step 0
        ok = (n_wall == 1) & (n_step <= 1) & (n_tag == 1) & (n_value == 1)
        # Every byte accounted for: nothing else in the event (no second value, no tensor,
        # no metadata, no odd encoding) — else it is decoded on its own.
        tag_len = np.asarray(self._tag_bytes_len, dtype=np.int64)[tag_bytes_id]
        value_len = 1 + _varint_len(tag_len) + tag_len + 5
        summary_len = 1 + _varint_len(value_len) + value_len
        size = 9 + np.where(n_step == 1, 1 + _varint_len(steps), 0)
        size += 1 + _varint_len(summary_len) + summary_len
        ok &= size == lengths
        tags = np.asarray(self._tag_bytes_lut, dtype=np.int64)[tag_bytes_id]
        ok &= tags >= 0
        walls = wall_bits.view(np.float64)
        values = value_bits.view(np.float32).astype(np.float64)
        return ok, steps, walls, tags, values

    def _sync_tag_bytes(self) -> None:
        """Give tags first seen by the column view their tag id."""
        known = len(self._tag_bytes_lut)
        if known == len(self._tag_bytes):
            return
        for raw in itertools.islice(self._tag_bytes, known, None):
            self._tag_bytes_len.append(len(raw))
            if raw == _SENTINEL_TAG:
                self._tag_bytes_lut.append(-1)
            else:
                self._tag_bytes_lut.append(self._tag_id(raw.decode("utf-8", "replace")))

    def _tag_id(self, tag: str) -> int:
        tag_id = self._tag_ids.get(tag)
        if tag_id is None:
            tag_id = self._tag_ids[tag] = len(self._tag_names)
            self._tag_names.append(f"{tag} (tag)" if tag in _RESERVED_NAMES else tag)
        return tag_id

    def _decode_event(
        self,
        payload: bytes,
        index: int,
        into: tuple[list[int], list[int], list[float], list[int], list[float]],
        file_name: str,
        out: SourceRead,
    ) -> None:
        """One event parsed with tensorboard's Event; its scalars appended to `into`."""
        try:
            event = event_pb2.Event.FromString(payload)
        except DecodeError:
            _note(out, file_name, "a record with a valid CRC is not an Event: skipped")
            return
        if not event.HasField("summary"):
            return
        for value in event.summary.value:
            tag = value.tag
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                # tf2 writers name the plugin in a tag's first event only
                self._plugins[tag] = value.metadata.plugin_data.plugin_name
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                number: float | None = value.simple_value
            elif kind == "tensor":
                plugin = self._plugins.get(tag, "")
                if plugin == "text" or value.tensor.dtype == types_pb2.DT_STRING:
                    self._take_text(tag, value.tensor, file_name, out)
                    continue
                number = tensor_scalar(value.tensor) if plugin in ("", "scalars") else None
            else:
                continue
            if number is None:
                continue
            into[0].append(index)
            into[1].append(event.step)
            into[2].append(event.wall_time)
            into[3].append(self._tag_id(tag))
            into[4].append(number)

    def _take_text(self, tag: str, tensor: Any, file_name: str, out: SourceRead) -> None:
        if tag not in ARGS_TAGS or not tensor.string_val:
            return
        text = tensor.string_val[0].decode("utf-8", "replace")
        try:
            config = json.loads(text)
        except ValueError:
            self.info_problem = f"{file_name}: the '{tag}' text is not JSON"
            return
        if isinstance(config, dict) and config != self.info.get("config"):
            self.info = {**self.info, "config": config}  # a new dict: readers may hold the old
            self.info_problem = None
            self._info_version += 1

    # -- scalars → rows ---------------------------------------------------------------------

    def _is_stale(self, newest_mtime: float) -> bool:
        """No growth for stale_seconds: by the files' mtime (a finished run, at once) or, if
        the file server's clock is off, by what this reader saw."""
        quiet_on_disk = newest_mtime and time.time() - newest_mtime >= self.stale_seconds
        return bool(quiet_on_disk) or self._quiet_here()

    def _quiet_here(self) -> bool:
        return time.monotonic() - self._last_growth >= self.stale_seconds

    def _open_row_due(self) -> bool:
        return self._open is not None and self._open.dirty and self._quiet_here()

    def _assemble(self, stream: _Stream, stale: bool) -> ParsedBlock | None:
        """Rows from this read's scalars (after the open row's); see the module docstring."""
        open_row = self._open
        parts: list[list[np.ndarray]] = [stream.steps, stream.walls, stream.tags, stream.values]
        if open_row is not None:
            prefix = [
                np.full(open_row.tags.size, open_row.step, dtype=np.int64),
                open_row.walls,
                open_row.tags,
                open_row.values,
            ]
            parts = [[first, *rest] for first, rest in zip(prefix, parts, strict=True)]
        if not parts[0]:
            return None
        steps, walls, tags, values = (np.concatenate(p) for p in parts)
        n = steps.size
        if n == 0:
            return None
        starts, kept_mask = split_rows(steps, tags, values)
        if kept_mask is not None:
            steps, walls, tags, values = (a[kept_mask] for a in (steps, walls, tags, values))
            n = steps.size
        rows = starts.size
        bounds = np.append(starts, n)
        emit = np.ones(rows, dtype=bool)
        kept = open_row.tags.size if open_row is not None else 0
        joined_open = open_row is not None and bounds[1] > kept  # new scalars of its step
        if open_row is not None and not (open_row.dirty or joined_open):
            emit[0] = False  # emitted already, unchanged
        last = rows - 1
        last_tags = tags[bounds[last] :]
        if last == 0 and open_row is not None:
            dirty, amended = open_row.dirty or joined_open, open_row.emitted
        else:
            dirty, amended = True, False
        prev_tags = (
            frozenset(tags[bounds[last - 1] : bounds[last]].tolist())
            if rows >= 2
            else self._prev_tags
        )
        if dirty:
            covers = bool(prev_tags) and prev_tags <= frozenset(last_tags.tolist())
            emit[last] = stale or (covers and not amended)
        else:
            emit[last] = False
        self._prev_tags = prev_tags
        self._open = _OpenRow(
            step=int(steps[-1]),
            tags=last_tags.copy(),
            values=values[bounds[last] :].copy(),
            walls=walls[bounds[last] :].copy(),
            emitted=bool(emit[last]) or (last == 0 and open_row is not None and open_row.emitted),
            dirty=dirty and not emit[last],
        )
        self._last_step = int(steps[-1])
        if not emit.any():
            return None
        return self._block(steps, walls, tags, values, starts, bounds, emit)

    def _block(
        self,
        steps: np.ndarray,
        walls: np.ndarray,
        tags: np.ndarray,
        values: np.ndarray,
        starts: np.ndarray,
        bounds: np.ndarray,
        emit: np.ndarray,
    ) -> ParsedBlock:
        rows = starts.size
        out_rows = np.flatnonzero(emit)
        out_index = np.full(rows, -1, dtype=np.int64)
        out_index[out_rows] = np.arange(out_rows.size)
        row_of = np.repeat(out_index, np.diff(bounds))  # output row of each scalar, or -1
        taken = row_of >= 0
        if not taken.all():
            row_of, tags, values = row_of[taken], tags[taken], values[taken]
        present = np.flatnonzero(np.bincount(tags, minlength=len(self._tag_names)))
        column_of = np.full(len(self._tag_names), -1, dtype=np.int64)
        column_of[present] = np.arange(present.size)
        grid = np.full((present.size, out_rows.size), np.nan)
        grid[column_of[tags], row_of] = values  # tags are distinct within a row
        columns = {TIME_COLUMN: np.maximum.reduceat(walls, starts)[out_rows]}
        for j, tag_id in enumerate(present.tolist()):
            columns[self._tag_names[tag_id]] = grid[j]
        return ParsedBlock(steps[starts[out_rows]], columns)


# -- helpers --------------------------------------------------------------------------------


def split_rows(
    steps: np.ndarray, tags: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of a scalar stream: (index of each row's first scalar, mask of the scalars kept,
    None if all are). The indices count kept scalars only.

    A row is a run of one step. Within it, a tag seen again with the same value is dropped
    (transformers logs `epoch` with the training, the evaluation and the final metrics of
    one step); with another value it starts a new row at the same step: a resume.
    """
    n = steps.size
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(steps[1:], steps[:-1], out=change[1:])
    run_starts = np.flatnonzero(change)
    run = np.cumsum(change) - 1
    keys = run * (int(tags.max()) + 1) + tags
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return run_starts, None  # the usual case: no tag twice in a step
    # Only the runs holding a repeated tag are walked in Python.
    order = np.argsort(keys, kind="stable")
    repeated = keys[order[1:]] == keys[order[:-1]]
    bounds = np.append(run_starts, n)
    extra: list[int] = []
    dropped: list[int] = []
    for r in np.unique(run[order[1:][repeated]]).tolist():
        first, stop = int(bounds[r]), int(bounds[r + 1])
        row: dict[int, float] = {}
        for i, tag, number in zip(
            range(first, stop), tags[first:stop].tolist(), values[first:stop].tolist(), strict=True
        ):
            if tag in row:
                old = row[tag]
                if old == number or (old != old and number != number):  # NaN == NaN here
                    dropped.append(i)
                    continue
                extra.append(i)
                row = {}
            row[tag] = number
    keep = np.ones(n, dtype=bool)
    keep[dropped] = False
    starts = np.union1d(run_starts, np.asarray(extra, dtype=np.int64))
    starts -= np.searchsorted(np.asarray(dropped, dtype=np.int64), starts)  # kept indices
    return starts, keep


def _frame(
    buf: bytes, pos: int, end: int, headers: dict[bytes, int]
) -> tuple[list[int], int, bool]:
    """Find the complete records from `pos`: (their starts, where framing stopped, True if it
    stopped at a header whose CRC is wrong). The one Python loop per record: keep it short.
    `headers` caches valid headers → record size: a run has few distinct record lengths."""
    starts: list[int] = []
    add = starts.append
    known = headers.get
    limit = end - 16  # the smallest record is 16 bytes
    while pos <= limit:
        size = known(buf[pos : pos + 12])
        if size is None:
            length, crc = _HEADER.unpack_from(buf, pos)
            if masked_crc(buf[pos : pos + 8]) != crc:
                return starts, pos, True
            if len(headers) >= 1 << 16:
                headers.clear()
            size = headers[buf[pos : pos + 12]] = 16 + length
        following = pos + size
        if following > end:
            break  # not fully written yet
        add(pos)
        pos = following
    return starts, pos, False


def _resync(buf: bytes, pos: int, budget: int) -> tuple[int, bool] | None:
    """After a bad length CRC: the first position from `pos` where a record starts whose
    header and data CRCs are both right, as (position, True). Failing that, the first
    position whose header CRC is right but whose data is not all in `buf` yet, as
    (position, False): it is checked again once complete. None if neither among the
    `budget` positions scanned (or all of buf's)."""
    end = len(buf)
    limit = min(end - 12, pos + budget - 1)
    waiting: int | None = None
    while pos <= limit:
        length, crc = _HEADER.unpack_from(buf, pos)
        if masked_crc(buf[pos : pos + 8]) == crc:
            stop = pos + 12 + length
            if stop + 4 > end:
                if waiting is None:
                    waiting = pos
            elif masked_crc(buf[pos + 12 : stop]) == struct.unpack_from("<I", buf, stop)[0]:
                return pos, True
        pos += 1
    return None if waiting is None else (waiting, False)


def _record_size(buf: bytes, pos: int) -> int:
    """Bytes the record at `pos` needs (16 if its header is not complete)."""
    if len(buf) - pos < 12:
        return 16
    return 16 + _HEADER.unpack_from(buf, pos)[0]


def _note(out: SourceRead, file_name: str, reason: str, *, skipped: bool = True) -> None:
    if skipped:
        out.skipped += 1
    if len(out.problems) < MAX_PROBLEMS_PER_READ:
        out.problems.append(Problem(file_name, None, reason))


def peek_file_last_step(path: Path, window: int = PEEK_WINDOW_BYTES) -> int | None:
    """Step of the last scalar event among the last `window` bytes of an events file.

    Finds the first position in the window where a record with both CRCs right starts,
    frames forward from there and parses records from the end. None if there is none.
    """
    with open_regular(path, within=path.parent) as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - window)
        f.seek(start)
        buf = f.read(window)
    pos = 0
    if start:
        sync = _first_record(buf)
        if sync is None:
            return None
        pos = sync
    starts, end, _ = _frame(buf, pos, len(buf), {})
    stops = [*(s - 4 for s in starts[1:]), end - 4]
    for begin, stop in zip(reversed(starts), reversed(stops), strict=True):
        data = buf[begin + 12 : stop]
        if masked_crc(data) != struct.unpack_from("<I", buf, stop)[0]:
            continue
        with contextlib.suppress(DecodeError):
            event = event_pb2.Event.FromString(data)
            if any(_is_scalar(v) for v in event.summary.value):
                return int(event.step)
    return None


def _first_record(buf: bytes) -> int | None:
    for pos in range(len(buf) - 16):
        length, crc = _HEADER.unpack_from(buf, pos)
        stop = pos + 12 + length
        if masked_crc(buf[pos : pos + 8]) != crc or stop + 4 > len(buf):
            continue
        if masked_crc(buf[pos + 12 : stop]) == struct.unpack_from("<I", buf, stop)[0]:
            return pos
    return None


def _is_scalar(value: Any) -> bool:
    kind = value.WhichOneof("value")
    return kind == "simple_value" or (kind == "tensor" and tensor_scalar(value.tensor) is not None)


def _run_name(directory: Path) -> str:
    """transformers/TRL write <output_dir>/runs/<date>_<host>/: name it output_dir/date_host."""
    if directory.parent.name == "runs" and directory.parent.parent.name:
        return f"{directory.parent.parent.name}/{directory.name}"
    return directory.name


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
