"""Parse blocks of metrics.jsonl lines into columns.

Fast path: pyarrow's multithreaded newline-delimited JSON reader, which also accepts Python's
bare NaN / Infinity / -Infinity tokens. Measured on a 1M-step file it is ~10x faster than
`pandas.read_json(lines=True)` and ~8x faster than orjson per line (see docs/benchmarks.md).
If a piece holds anything the fast path cannot take as-is (a torn or non-JSON line, a
non-object, a missing or non-integer step, mixed types), that piece alone is re-parsed line
by line, so one bad line costs that piece a slow parse and nothing else.

Input is hostile until read: a line nested deeper than MAX_JSON_DEPTH never reaches a parser
(pyarrow's recursive parser overflows its stack on ~20,000 nested arrays and takes the process
with it); it is a damaged record. The check is cheap: a line shorter than MAX_JSON_DEPTH
bytes cannot nest that deep, and only a line with that many brackets is scanned. A step
beyond int64 is a damaged record; a value beyond float range reads as ±Infinity, as pyarrow
and Python read `1e999`. Metric names are made encodable (lone surrogates replaced).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from monitor.sources.tail import LONG_LINE_MARKER
from monitor.text import utf8_text

FAST_PIECE_BYTES = 4 << 20  # one bad line sends at most this much to the slow path
# Deepest nesting of brackets a line may have. An honest record nests 2-4 levels; orjson
# stops at 1024 and Python's json at its recursion limit (~1000 frames, shared with the
# caller's): half of that leaves both parsers and `utf8_strings` well inside their limits.
MAX_JSON_DEPTH = 512
MAX_STEP = (1 << 63) - 1  # steps are stored as int64
_JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # an escaped character: never a quote's end
_JSON_STRING = re.compile(rb'"[^"]*+"')  # after escapes are gone; possessive: linear
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class TooDeep(ValueError):
    """A JSON text nested deeper than MAX_JSON_DEPTH: refused before parsing."""

    def __init__(self, limit: str = f"{MAX_JSON_DEPTH} levels") -> None:
        super().__init__(f"nested deeper than {limit}: not parsed")


@dataclass(frozen=True)
class Problem:
    """A line that was skipped (or a file that could not be read), for humans."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class ParsedBlock:
    """Valid records of a block in file order (steps may go back: resumes)."""

    steps: np.ndarray  # int64
    columns: dict[str, np.ndarray]  # float64, one per metric key other than step
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    lines: int = 0  # lines the block spanned (valid, skipped and blank)

    @property
    def n(self) -> int:
        return len(self.steps)


def parse_pieces(
    data: bytes,
    first_line: int = 1,
    begin: int = 0,
    end: int | None = None,
    *,
    nested: str | None = None,
) -> Iterator[ParsedBlock]:
    """Parse complete lines (`data[begin:end]`, ending with a newline) piece by piece.

    Never raises on bad content: bad lines are reported in each piece's `problems`, and each
    piece says how many lines it spanned so the caller can keep counting.

    `nested`: the metrics are the keys of this object-valued field rather than the record's
    own keys (verl writes `{"step": N, "data": {...}}`); a line without it is skipped.
    """
    start, line = begin, first_line
    size = len(data) if end is None else end
    # pyarrow lets invalid UTF-8 through; the rule is that such a line is skipped. isascii()
    # is nearly free, so only non-ASCII input pays for a real UTF-8 check.
    all_ascii = data.isascii()  # the held-back partial line may be included: harmless
    while start < size:
        end = data.rfind(b"\n", start, min(start + FAST_PIECE_BYTES, size)) + 1
        if end <= start:  # a single line longer than a piece
            end = data.find(b"\n", start + FAST_PIECE_BYTES, size) + 1 or size
        # Newline positions cost what counting them did, and bound every line's length.
        newline_at = np.flatnonzero(np.frombuffer(data, np.uint8, end - start, start) == 10)
        newlines = newline_at.size
        # A zero-copy view for the fast path; only the slow path makes a bytes copy.
        parsed = None
        if (all_ascii or _is_utf8(data[start:end])) and not _nests_too_deep(
            data, start, end, newline_at
        ):
            parsed = _parse_fast(pa.py_buffer(memoryview(data)[start:end]), newlines, nested)
        if parsed is None:
            parsed = _parse_slow(data[start:end], line, nested)
        parsed.lines = newlines
        yield parsed
        line += newlines
        start = end


def nests_too_deep(data: bytes) -> bool:
    """True if a line of newline-delimited `data` nests deeper than MAX_JSON_DEPTH: such
    data must not reach pyarrow (see `_nests_too_deep`)."""
    newline_at = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    return _nests_too_deep(data, 0, len(data), newline_at)


def _nests_too_deep(data: bytes, start: int, end: int, newline_at: np.ndarray) -> bool:
    """True if a line of `data[start:end]` nests deeper than MAX_JSON_DEPTH.

    Cheap for the pieces a trainer writes: a line no longer than MAX_JSON_DEPTH bytes
    cannot nest deeper (one max over the line lengths); wide records without arrays, each
    line an object, are bounded by counting braces once. Otherwise each line's opening
    brackets are counted, and only a line with more than the limit is measured exactly.
    """
    size = end - start
    if size <= MAX_JSON_DEPTH:
        return False
    ends = newline_at
    if not ends.size or ends[-1] != size - 1:
        ends = np.append(ends, size)  # a last line without its newline (never from a tail)
    bounds = np.concatenate(([-1], ends))  # line i is data[bounds[i] + 1 : bounds[i + 1]]
    lengths = np.diff(bounds) - 1
    if lengths.max() <= MAX_JSON_DEPTH:
        return False
    piece = np.frombuffer(data, np.uint8, size, start)
    if data.find(b"[", start, end) < 0:
        opening = piece == 0x7B
        # Each line opens with "{" (so holds one): no line holds more than the rest allow.
        firsts = bounds[:-1] + 1
        if (
            lengths.min() > 0
            and bool((piece[firsts] == 0x7B).all())
            and np.count_nonzero(opening) - (lengths.size - 1) <= MAX_JSON_DEPTH
        ):
            return False
    else:
        opening = (piece | 0x20) == 0x7B  # "[" | 0x20 is "{"
    positions = np.flatnonzero(opening)
    if positions.size <= MAX_JSON_DEPTH:
        return False
    per_line = np.bincount(np.searchsorted(newline_at, positions))
    for i in np.flatnonzero(per_line > MAX_JSON_DEPTH):
        line = data[start + int(bounds[i]) + 1 : start + int(bounds[i + 1])]
        if json_depth(line) > MAX_JSON_DEPTH:
            return True
    return False


def json_depth(raw: bytes) -> int:
    """How deep the brackets of a JSON text nest outside its strings, in linear time and
    memory proportional to its brackets.

    Exact for valid JSON; for invalid JSON at least the depth a parser reaches before its
    first error (a stray closing bracket does not hide the opening ones after it).
    """
    text = _JSON_STRING.sub(b"", _JSON_ESCAPE.sub(b"", raw)).translate(None, _NOT_BRACKETS)
    if not text:
        return 0
    step = np.where((np.frombuffer(text, np.uint8) | 0x20) == 0x7B, 1, -1)  # [ { open
    level = np.cumsum(step)
    floor = np.minimum.accumulate(np.minimum(level, 0))
    return int((level - floor).max())


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_json_table(data: pa.Buffer | bytes) -> pa.Table | None:
    """Newline-delimited JSON objects as one pyarrow table, or None if pyarrow cannot take
    them as-is (the caller then parses line by line). Accepts NaN/Infinity tokens."""
    try:
        return pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=1 << 20),
            parse_options=pa_json.ParseOptions(unexpected_field_behavior="infer"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def numeric_column(array: pa.ChunkedArray) -> np.ndarray | None:
    """A pyarrow column as float64 (nulls → NaN), or None if it is not a metric series."""
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), np.nan)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return array.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return None  # strings, booleans, nested values: not a metric series


def _parse_fast(piece: pa.Buffer, newlines: int, nested: str | None = None) -> ParsedBlock | None:
    table = read_json_table(piece)
    if table is None or "step" not in table.column_names:
        return None
    step = table.column("step")
    if not pa.types.is_integer(step.type) or step.null_count:
        return None  # a step beyond int64 arrives as a double: the slow path says so
    try:
        steps = step.cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid:  # an unsigned step beyond int64
        return None
    if steps.size and steps.min() < 0:
        return None
    if table.num_rows != newlines:
        # Blank lines, or two objects on one line: let the slow path decide line by line.
        return None
    if nested is None:
        names = [name for name in table.column_names if name != "step"]
        arrays = [table.column(name) for name in names]
    else:
        if nested not in table.column_names:
            return None
        inner = table.column(nested)
        # A row without the object (missing, null, not an object) is the slow path's call.
        if not pa.types.is_struct(inner.type) or inner.null_count:
            return None
        names = [inner.type.field(i).name for i in range(inner.type.num_fields)]
        arrays = inner.flatten()
    columns: dict[str, np.ndarray] = {}
    for name, array in zip(names, arrays, strict=True):
        values = numeric_column(array)
        if values is not None:
            columns[utf8_text(name)] = values
    return ParsedBlock(steps, columns)


def decode_line(raw: bytes, *, check_depth: bool = True) -> object:
    """One JSON text (a line, or a small document such as run.json); raises ValueError
    (incl. UnicodeDecodeError, TooDeep) if it is not JSON or nests too deep to parse.

    `check_depth=False` (a large document such as trainer_state.json, whose brackets are
    many) leaves the depth to the parsers' own limits: orjson stops at 1024 levels, json at
    its recursion limit; both raise, neither crashes.
    """
    if (
        check_depth
        and len(raw) > MAX_JSON_DEPTH
        and raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
        and json_depth(raw) > MAX_JSON_DEPTH
    ):
        raise TooDeep()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses NaN/Infinity tokens, which Python's json writes: retry with json.
        try:
            return json.loads(raw.decode("utf-8"))
        except RecursionError:  # deeper than json's recursion limit allows
            raise TooDeep("json's recursion limit") from None


def _parse_slow(piece: bytes, first_line: int, nested: str | None = None) -> ParsedBlock:
    steps: list[int] = []
    columns: dict[str, list[float]] = {}
    problems: list[tuple[int, str]] = []
    for offset, raw in enumerate(piece.split(b"\n")[:-1]):
        line_no = first_line + offset
        if not raw.strip():
            continue
        if raw == LONG_LINE_MARKER:
            problems.append((line_no, "line too long: skipped without reading it"))
            continue
        try:
            record = decode_line(raw)
        except UnicodeDecodeError:
            problems.append((line_no, "invalid UTF-8"))
            continue
        except TooDeep as e:
            problems.append((line_no, str(e)))
            continue
        except ValueError as e:
            problems.append((line_no, f"not valid JSON ({_short(e)})"))
            continue
        if not isinstance(record, dict):
            problems.append((line_no, f"not a JSON object (got {type(record).__name__})"))
            continue
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
            problems.append((line_no, _bad_step(step)))
            continue
        values = record if nested is None else record.get(nested)
        if not isinstance(values, dict):
            problems.append((line_no, f"field {nested!r} must be a JSON object"))
            continue
        row = len(steps)
        steps.append(step)
        for key, value in values.items():
            if key == "step" and nested is None:
                continue
            number = _as_number(value)
            if number is None:
                continue
            column = columns.get(key)
            if column is None:
                column = columns[key] = [math.nan] * row
            elif len(column) < row:
                column.extend([math.nan] * (row - len(column)))
            column.append(number)
    n = len(steps)
    arrays = {}
    for key, values in columns.items():
        values.extend([math.nan] * (n - len(values)))
        arrays[utf8_text(key)] = np.asarray(values, dtype=np.float64)
    return ParsedBlock(np.asarray(steps, dtype=np.int64), arrays, problems)


def _bad_step(step: object) -> str:
    if isinstance(step, int) and not isinstance(step, bool) and step > MAX_STEP:
        return "field 'step' is out of range (more than 2**63 - 1)"
    return f"field 'step' must be an integer >= 0, got {_short(repr(step))}"


def _as_number(value: object) -> float | None:
    if value is None:
        return math.nan  # null reads as a missing value, as in the fast path
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range: ±Infinity, as pyarrow reads it
        return math.inf if value > 0 else -math.inf


def _short(error: Exception | str) -> str:
    text = str(error)
    return text if len(text) <= 80 else text[:77] + "..."
