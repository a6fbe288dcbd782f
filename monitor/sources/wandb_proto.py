"""The protobuf side of W&B run files: a small bounds-checked wire decoder, and the
Record, RunRecord, ConfigRecord, RunExitRecord and HistoryStep fields klwatch reads (the
field numbers are listed in `monitor.sources.wandb`'s docstring).

Every step of the decoder moves forward and stays inside its message, so hostile bytes
raise `_Damaged` (or IndexError), never loop, and cost only the record they are in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from monitor.sources.parse import decode_line

_FIXED64 = struct.Struct("<d")

# Record fields: what the record is (its `record_type` oneof member)
_HISTORY, _SUMMARY, _CONFIG, _RUN, _EXIT = 2, 3, 5, 17, 18
_NOT_RECORD_TYPE = frozenset({1, 16, 19, 200})  # num, control, uuid, _info


class _Damaged(ValueError):
    """Bytes that are not the protobuf message they should be."""


# -- the protobuf wire format ------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at `pos`; at most 10 bytes, all before `end`."""
    result = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    raise _Damaged("truncated or overlong varint")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """The fields of the message in buf[pos:end] as (number, wire type, a, b): a varint's
    value in `a`; a length-delimited or fixed field's bytes at buf[a:b]. Every step moves
    forward and stays before `end`, so any input ends (or raises _Damaged)."""
    out = []
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Damaged("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            out.append((number, 0, value, 0))
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end)
            stop = pos + size
        elif wire == 1:
            stop = pos + 8
        elif wire == 5:
            stop = pos + 4
        else:  # groups (3, 4) are long deprecated; 6, 7 do not exist
            raise _Damaged(f"wire type {wire}")
        if stop > end:
            raise _Damaged("field runs past its message")
        out.append((number, wire, pos, stop))
        pos = stop
    return out


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _record_type(payload: bytes) -> tuple[int, int, int]:
    """(field number, start, end) of the record's `record_type` member, (0, 0, 0) if none.

    wandb-core writes `num` first and then the member: that case is read without the
    general decoder, and a summary (one per history row) is passed over at its tag."""
    end = len(payload)
    if end > 3 and payload[0] == 0x08:
        pos = 1
        while pos < end and payload[pos] & 0x80:
            pos += 1
        pos += 1
        if pos < end:
            tag = payload[pos]
            if tag == 0x1A:
                return _SUMMARY, 0, 0
            if tag < 0x80 and tag & 7 == 2 and tag >> 3 not in _NOT_RECORD_TYPE:
                size, start = _varint(payload, pos + 1, end)
                if start + size <= end:
                    return tag >> 3, start, start + size
    for number, wire, a, b in _fields(payload, 0, end):
        if wire == 2 and number not in _NOT_RECORD_TYPE:
            return number, a, b
    return 0, 0, 0


@dataclass
class _Meta:
    """What the run, config and exit records said."""

    run_id: str = ""
    project: str = ""
    display_name: str = ""
    created: float | None = None
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    problem: str | None = None


def _take_meta(meta: _Meta, kind: int, buf: bytes, start: int, end: int) -> None:
    if kind == _EXIT:
        meta.exit_code = 0
        for number, wire, a, _ in _fields(buf, start, end):
            if number == 1 and wire == 0:
                meta.exit_code = _int32(a)
        return
    if kind == _CONFIG:
        _take_config(meta, buf, start, end)
        return
    for number, wire, a, b in _fields(buf, start, end):  # RunRecord
        if wire == 2 and number == 1:
            meta.run_id = _text(buf[a:b])
        elif wire == 2 and number == 3:
            meta.project = _text(buf[a:b])
        elif wire == 2 and number == 4:
            _take_config(meta, buf, a, b)
        elif wire == 2 and number == 8:
            meta.display_name = _text(buf[a:b])
        elif wire == 2 and number == 17:
            meta.created = _timestamp(buf, a, b)
        elif wire == 0 and number == 18:  # resumed (set by the server: online runs)
            meta.resumed = bool(a)


def _take_config(meta: _Meta, buf: bytes, start: int, end: int) -> None:
    """A ConfigRecord's updates and removals into meta.config (a new dict: readers may hold
    the old one)."""
    config = dict(meta.config)
    for number, wire, a, b in _fields(buf, start, end):
        if wire != 2 or number not in (1, 2):
            continue
        key = b""
        nested: list[bytes] = []
        value: bytes | None = None
        for item_number, item_wire, c, d in _fields(buf, a, b):
            if item_wire != 2:
                continue
            if item_number == 1:
                key = buf[c:d]
            elif item_number == 2:
                nested.append(buf[c:d])
            elif item_number == 16:
                value = buf[c:d]
        name = _text(key or b".".join(nested))
        if not name or name == "_wandb":
            continue
        if number == 2:
            config.pop(name, None)
            continue
        if value is None:
            continue
        try:
            config[name] = decode_line(value)
        except (ValueError, RecursionError):
            meta.problem = f"config value of {name!r} is not JSON: left out"
    meta.config = config


def _timestamp(buf: bytes, start: int, end: int) -> float | None:
    seconds = nanos = 0
    for number, wire, a, _ in _fields(buf, start, end):
        if wire == 0 and number == 1:
            seconds = _int64(a)
        elif wire == 0 and number == 2:
            nanos = _int32(a)
    return seconds + nanos / 1e9 if seconds > 0 else None


def _history_step(buf: bytes, start: int, end: int) -> int:
    step = 0  # proto3: a HistoryStep without num is step 0
    for number, wire, a, _ in _fields(buf, start, end):
        if number == 1 and wire == 0:
            step = _int64(a)
    return step if step >= 0 else -1


def _tail_step(tail: bytes) -> int | None:
    """The step in what follows a history record's items (HistoryStep.num, -1 if there is
    none); None if an item is among it (the split missed one)."""
    size = len(tail)
    if size >= 2 and tail[0] == 0x12 and tail[1] == size - 2:  # just `step`: the usual tail
        if size == 2:
            return 0  # proto3: step 0 is an empty HistoryStep
        if tail[2] == 0x08:
            value, pos = _varint(tail, 3, size)
            if pos == size:
                value = _int64(value)
                return value if value >= 0 else -1
    step = -1
    for number, wire, a, b in _fields(tail, 0, size):
        if number == 1:
            return None
        if number == 2 and wire == 2:
            step = _history_step(tail, a, b)
    return step
