"""Decoding TensorBoard events, for monitor.sources.tensorboard: the data of a record (a
serialized `tensorboard.Event`) → scalars (step, wall time, tag, value), and the `args` text.

Rules (each has a test in tests/test_source_tensorboard.py):

* Scalars: `simple_value` (torch's default), or a numeric tensor holding one value (float,
  double, half, bfloat16, ints: tensorboard's own writer and tf2 summaries, plugin
  "scalars"). Histograms, images, audio and other non-scalar values are ignored. A tag's
  column is its name as written ("train/kl"); monitor.presets maps names. A tag named
  "time" or "step" becomes "time (tag)" / "step (tag)": those names are the row's own.
* Text: the `args` text (transformers' TensorBoardCallback writes the TrainingArguments
  JSON with `add_text("args", …)`, tag "args/text_summary") becomes `info["config"]`: that
  is where TRL's β (`beta`, or `kl_coef` for PPO) is found.

Speed: the events of a block are parsed by one protobuf call: their payloads are joined,
each preceded by a sentinel, and parsed as an `EventColumns` message whose fields carry
Event's field numbers but are repeated, so the parser appends each event's wall time, step,
tag and value to flat columns. The sentinels mark where each event's entries begin. An event
goes this fast way only if it is exactly {wall_time, step, summary{value{tag, simple_value}}}
(its entries counted per column and its byte length re-computed from them); anything else
(the file header, text, tensors, metadata, several values, odd encodings) is parsed on its
own with `event_pb2.Event`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2

from monitor.sources.base import SourceRead
from monitor.sources.tensorboard_records import note

ARGS_TAGS = ("args/text_summary", "args")  # torch's add_text adds "/text_summary"
TIME_COLUMN = "time"
_RESERVED_NAMES = frozenset({TIME_COLUMN, "step"})

# Called with (tag, tensor, file name) for each text event.
TextSink = Callable[[str, Any, str], None]


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


@dataclass
class Stream:
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


def is_scalar(value: Any) -> bool:
    """A Summary.Value holding a scalar (simple_value, or a numeric tensor of one value)."""
    kind = value.WhichOneof("value")
    return kind == "simple_value" or (kind == "tensor" and tensor_scalar(value.tensor) is not None)


def args_config(tag: str, tensor: Any) -> dict[str, Any] | None:
    """The config in an `args` text event: a dict, or None (another tag, no text, or JSON
    that is not an object). Raises ValueError if the text is not JSON."""
    if tag not in ARGS_TAGS or not tensor.string_val:
        return None
    config = json.loads(tensor.string_val[0].decode("utf-8", "replace"))
    return config if isinstance(config, dict) else None


# -- records → scalars ----------------------------------------------------------------------


class EventDecoder:
    """Decodes the events of a run into a Stream; keeps its tags' ids and column names
    (`tag_names`, by id) across reads."""

    def __init__(self, on_text: TextSink) -> None:
        self._on_text = on_text
        self._tag_ids: dict[str, int] = {}
        self.tag_names: list[str] = []
        # Tags as the column view sees them (bytes) → id; ids in first-seen order.
        self._tag_bytes: defaultdict[bytes, int] = defaultdict(itertools.count().__next__)
        self._tag_bytes_lut: list[int] = []  # bytes id → tag id (-1: the sentinel)
        self._tag_bytes_len: list[int] = []
        self._plugins: dict[str, str] = {}  # tag → plugin named in its metadata

    def decode(
        self,
        payloads: list[bytes],
        lengths: np.ndarray,
        file_name: str,
        stream: Stream,
        out: SourceRead,
    ) -> None:
        """Append the scalars of these events (the data of records, in file order) to
        `stream`."""
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
                self._tag_bytes_lut.append(self.tag_id(raw.decode("utf-8", "replace")))

    def tag_id(self, tag: str) -> int:
        tag_id = self._tag_ids.get(tag)
        if tag_id is None:
            tag_id = self._tag_ids[tag] = len(self.tag_names)
            self.tag_names.append(f"{tag} (tag)" if tag in _RESERVED_NAMES else tag)
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
            note(out, file_name, "a record with a valid CRC is not an Event: skipped")
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
                    self._on_text(tag, value.tensor, file_name)
                    continue
                number = tensor_scalar(value.tensor) if plugin in ("", "scalars") else None
            else:
                continue
            if number is None:
                continue
            into[0].append(index)
            into[1].append(event.step)
            into[2].append(event.wall_time)
            into[3].append(self.tag_id(tag))
            into[4].append(number)
