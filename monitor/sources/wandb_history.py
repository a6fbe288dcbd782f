"""The history records of a W&B run file, decoded in bulk: the numeric items of many
records at once with numpy and Arrow (`_history_fast`), the rest one by one through the
general wire decoder (`_history_general`), and the value_json texts parsed as numbers.

Items are reported by column id: `key_id` turns a key's raw bytes (a name, "a.b" for a
nested key) into the reader's column id, -1 for a key it refuses.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from monitor.sources.parse import MAX_STEP
from monitor.sources.rows import as_number
from monitor.sources.wandb_proto import (
    _FIXED64,
    _Damaged,
    _fields,
    _history_step,
    _tail_step,
    _zigzag,
)

MAX_NUMBER_BYTES = 64  # a numeric value_json longer than this is not taken as a number
# First bytes of a JSON value that may be a number: digits, '-', NaN, Infinity (and null,
# a missing value, read apart on the fast path: Arrow does not take it for a number).
_NUMERIC_FIRST = np.zeros(256, dtype=bool)
_NUMERIC_FIRST[list(b"-0123456789NI")] = True
_JSON_SCALAR_FIRST = _NUMERIC_FIRST.copy()
_JSON_SCALAR_FIRST[ord("n")] = True
_SPECIAL_TOKENS = {b"NaN": math.nan, b"Infinity": math.inf, b"-Infinity": -math.inf}


@dataclass
class _Items:
    """Numeric history items: value `values[i]` of column `kids[i]` in row `rows[i]`."""

    rows: np.ndarray  # int64
    kids: np.ndarray  # int64
    values: np.ndarray  # float64

    @staticmethod
    def empty() -> _Items:
        return _Items(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))

    def concat(self, other: _Items) -> _Items:
        return _Items(
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.kids, other.kids]),
            np.concatenate([self.values, other.values]),
        )


def _history_fast(
    hists: list[bytes], steps: np.ndarray, key_id: Callable[[bytes], int]
) -> tuple[_Items, list[int], int]:
    """Records in wandb-core's encoding, decoded together with numpy: items
    `0a L (12|0a) Lk key 82 01 Lv value` with one-byte lengths, then the step.

    Every value tag `82 01` is found in the joined records; the item header before it
    and the value after it are checked against each other (L = Lk + Lv + 5, the header
    ends where the tag starts and begins where the previous value ends); the keys are
    dictionary-encoded and the numeric values parsed by Arrow, each in one call.
    Returns the items, the rows (records) left to the general decoder (a check failed,
    or another shape) and how many values looked like numbers but were not."""
    n = len(hists)
    data = b"".join(hists)
    raw = np.frombuffer(data, dtype=np.uint8)
    sizes = np.fromiter(map(len, hists), dtype=np.int64, count=n)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    tags = np.flatnonzero((raw[:-1] == 0x82) & (raw[1:] == 0x01)) if raw.size > 1 else None
    if tags is None or tags.size == 0:
        return _Items.empty(), list(range(n)), 0
    record = np.searchsorted(ends, tags, side="right")
    top = raw.size - 1

    def at(index: np.ndarray) -> np.ndarray:
        return raw[np.clip(index, 0, top)].astype(np.int64)

    first = np.ones(tags.size, dtype=bool)  # the record's first item
    first[1:] = record[1:] != record[:-1]
    last = np.ones(tags.size, dtype=bool)
    last[:-1] = first[1:]
    value_len = at(tags + 2)
    value_start = tags + 3
    value_end = value_start + value_len
    head = np.empty_like(tags)
    head[first] = starts[record[first]]
    head[~first] = value_end[np.flatnonzero(~first) - 1]
    head_len = tags - head
    key_len = at(head + 3)
    kind = at(head + 2)
    ok = (tags + 2 < ends[record]) & (value_len < 0x80) & (head_len >= 4)
    ok &= (at(head) == 0x0A) & ((kind == 0x12) | (kind == 0x0A)) & (key_len < 0x80)
    ok &= (head_len == 4 + key_len) & (at(head + 1) == key_len + value_len + 5)
    ok &= ~last | (value_end <= ends[record])
    slow = np.zeros(n, dtype=bool)
    slow[record[~ok]] = True
    has_items = np.zeros(n, dtype=bool)
    has_items[record] = True
    slow |= ~has_items
    # what follows the last item: the step (a few bytes per record)
    for row, begin in zip(record[last].tolist(), value_end[last].tolist(), strict=True):
        if slow[row]:
            continue
        try:
            step = _tail_step(data[begin : ends[row]])
        except _Damaged:
            step = None
        if step is None:
            slow[row] = True
        else:
            steps[row] = step
    take = ~slow[record]
    rows = record[take]
    kids = _kids(raw, (head + 4)[take], tags[take], key_id)
    value_start, value_end = value_start[take], value_end[take]
    value_len = value_len[take]
    known = kids >= 0  # (-1: a key refused)
    first_byte = at(value_start)
    numeric = known & _NUMERIC_FIRST[first_byte] & (value_len > 0)
    numeric &= value_len <= MAX_NUMBER_BYTES
    values = _cast_numbers(raw, value_start[numeric], value_end[numeric])
    bad = 0
    if values is None:  # something Arrow does not read as a number: one by one
        tokens = _slices(data, value_start[numeric], value_end[numeric])
        parsed, values, bad = _numbers(tokens)
        numeric[np.flatnonzero(numeric)[~parsed]] = False
    null = known & (first_byte == 0x6E) & (value_len == 4)  # "null": a missing value
    null &= (at(value_start + 1) == 0x75) & (at(value_start + 2) == 0x6C)
    null &= at(value_start + 3) == 0x6C
    items = _Items(rows[numeric], kids[numeric], values)
    if null.any():
        items = items.concat(_Items(rows[null], kids[null], np.full(int(null.sum()), np.nan)))
    return items, np.flatnonzero(slow).tolist(), bad


def _kids(
    raw: np.ndarray, starts: np.ndarray, stops: np.ndarray, key_id: Callable[[bytes], int]
) -> np.ndarray:
    """The column id of each key raw[starts[i]:stops[i]] (-1: refused): the keys are
    gathered into one buffer and dictionary-encoded by Arrow, so only the distinct keys
    reach Python."""
    if not starts.size:
        return np.zeros(0, dtype=np.int64)
    blob, offsets = _gather(raw, starts, stops)
    keys = pa.Array.from_buffers(
        pa.large_binary(), starts.size, [None, pa.py_buffer(offsets), pa.py_buffer(blob)]
    ).dictionary_encode()
    ids = np.array([key_id(k) for k in keys.dictionary.to_pylist()], dtype=np.int64)
    return ids[keys.indices.to_numpy(zero_copy_only=False)]


def _history_general(
    hist: bytes, key_id: Callable[[bytes], int]
) -> tuple[list[tuple[int, bytes]], int]:
    """One history record by the general decoder: ((column id, value JSON) of each item
    with a key and a value, HistoryStep or -1). Raises _Damaged."""
    pairs: list[tuple[int, bytes]] = []
    step = -1
    for number, wire, a, b in _fields(hist, 0, len(hist)):
        if number == 1 and wire == 2:
            item = _item(hist, a, b, key_id)
            if item is not None:
                pairs.append(item)
        elif number == 2 and wire == 2:
            step = _history_step(hist, a, b)
    return pairs, step


def _item(
    buf: bytes, start: int, end: int, key_id: Callable[[bytes], int]
) -> tuple[int, bytes] | None:
    """(column id, value as JSON text) of a HistoryItem; None if it has no key, no value
    or too many names."""
    key = b""
    nested: list[bytes] = []
    value: bytes | None = None
    for number, wire, a, b in _fields(buf, start, end):
        if wire == 2 and number == 1:
            key = buf[a:b]
        elif wire == 2 and number == 2:
            nested.append(buf[a:b])
        elif wire == 2 and number == 16:
            value = buf[a:b]
        elif wire == 0 and number == 5:  # integer (sint64)
            value = str(_zigzag(a)).encode()
        elif wire == 1 and number == 6:  # number (double)
            value = _number_token(_FIXED64.unpack_from(buf, a)[0])
    name = key or b".".join(nested)
    if not name or value is None:
        return None
    kid = key_id(name)
    return None if kid < 0 else (kid, value)


def _slices(data: bytes, starts: np.ndarray, stops: np.ndarray) -> list[bytes]:
    """data[starts[i]:stops[i]] for every i, sliced by C functions (no Python loop body)."""
    return list(map(data.__getitem__, map(slice, starts.tolist(), stops.tolist())))


def _gather(
    raw: np.ndarray, starts: np.ndarray, stops: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The byte ranges raw[starts[i]:stops[i]] copied end to end, and their offsets in it."""
    lengths = stops - starts
    offsets = np.zeros(starts.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths)
    index += np.arange(offsets[-1], dtype=np.int64)
    return raw[index], offsets


def _cast_numbers(raw: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray | None:
    """The numbers written at raw[starts[i]:stops[i]], parsed by one Arrow cast (which
    reads NaN, Infinity and -Infinity as JSON writers spell them); None if any is not a
    number."""
    if not starts.size:
        return np.zeros(0)
    blob, offsets = _gather(raw, starts, stops)
    texts = pa.Array.from_buffers(
        pa.large_string(), starts.size, [None, pa.py_buffer(offsets), pa.py_buffer(blob)]
    )
    try:
        numbers = pc.cast(texts, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return numbers.to_numpy(zero_copy_only=False)


def _number_token(number: float) -> bytes:
    if math.isnan(number):
        return b"NaN"
    if math.isinf(number):
        return b"Infinity" if number > 0 else b"-Infinity"
    return repr(number).encode()


def _integral(values: np.ndarray) -> np.ndarray:
    """Mask of values that are integer steps in 0..MAX_STEP."""
    with np.errstate(invalid="ignore"):
        return (values >= 0) & (values <= MAX_STEP) & (values == np.floor(values))


def _numbers(tokens: list[bytes]) -> tuple[np.ndarray, np.ndarray, int]:
    """Which value_json texts are numbers, their values, and how many were not JSON.

    Classified by first byte in bulk (numpy over the texts joined with NUL, which JSON text
    never holds); the numeric ones parsed by one orjson call over a joined array, or by
    Python's json where NaN/Infinity tokens occur, or one by one where something fails."""
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0), 0
    joined = b"\x00".join(tokens)
    raw = np.frombuffer(joined, dtype=np.uint8)
    separators = np.flatnonzero(raw == 0)
    if separators.size == n - 1:
        starts = np.empty(n, dtype=np.int64)
        starts[0] = 0
        starts[1:] = separators + 1
        lengths = np.diff(np.append(starts, raw.size + 1)) - 1
        first = raw[np.minimum(starts, max(raw.size - 1, 0))] if raw.size else starts * 0
        numeric = _JSON_SCALAR_FIRST[first] & (lengths > 0) & (lengths <= MAX_NUMBER_BYTES)
    else:  # a NUL in a value: classify one by one
        numeric = np.fromiter(
            (0 < len(t) <= MAX_NUMBER_BYTES and _JSON_SCALAR_FIRST[t[0]] for t in tokens),
            dtype=bool,
            count=n,
        )
    picked = list(itertools.compress(tokens, numeric.tolist()))
    values = _parse_numbers(picked)
    if values is not None:
        return numeric, values, 0
    parsed = [_one_number(t) for t in picked]
    ok = np.array([v is not None for v in parsed], dtype=bool)
    keep = np.flatnonzero(numeric)
    numeric[keep[~ok]] = False
    return (
        numeric,
        np.array([v for v in parsed if v is not None], dtype=np.float64),
        int((~ok).sum()),
    )


def _parse_numbers(tokens: list[bytes]) -> np.ndarray | None:
    """All `tokens` parsed as one JSON array, or None if any of them is not a number."""
    text = b"[" + b",".join(tokens) + b"]"
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(text)  # NaN, Infinity, -Infinity, and 1e999
        except (ValueError, RecursionError):
            return None
    if len(parsed) != len(tokens):
        return None
    try:
        values = np.array(parsed, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return values if values.shape == (len(tokens),) else None


def _one_number(token: bytes) -> float | None:
    special = _SPECIAL_TOKENS.get(token)
    if special is not None:
        return special
    try:
        value = json.loads(token)
    except (ValueError, RecursionError):
        return None
    return as_number(value) if not isinstance(value, bool) else None
