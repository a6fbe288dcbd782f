"""TFRecord framing of TensorBoard event files, for monitor.sources.tensorboard.

An events file is a stream of records: uint64 length, uint32 masked CRC32C of the length,
the data (a serialized `tensorboard.Event`), uint32 masked CRC32C of the data.

Reading rules (each has a test in tests/test_source_tensorboard.py):

* Only new bytes are read: one byte offset per file. A record not fully written yet (its
  header, data or CRC missing) is held back and read once complete.
* A record whose data CRC is wrong is skipped and counted (`SourceRead.skipped`, one
  `Problem` each, capped per read); the records after it are read. A wrong length CRC means
  the length cannot be trusted, so the framing is lost: the reader searches forward for the
  next position where a record with both CRCs right starts (a false match needs two 32-bit
  CRCs to agree by chance), skips what lies between and reports it once. The search covers
  at most RESYNC_SCAN_BYTES per read and goes on in the next read. Never fatal.

Speed: the only per-record Python loop is framing (`_frame`); slicing and CRCs run through
`map` over C functions.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import crc32c
import numpy as np

from monitor.sources.base import MAX_PROBLEMS_PER_READ, SourceRead
from monitor.sources.parse import Problem
from monitor.sources.tail import open_regular

READ_BLOCK_BYTES = 8 << 20  # bytes read (and parsed in one protobuf call) at a time
RESYNC_SCAN_BYTES = 1 << 20  # per read, after a bad length CRC (~1 µs a byte)
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length
_MASK_DELTA = 0xA282EAD8
_FOUR = np.arange(4)

# Called with the data of the records whose CRC is right, in file order, and their lengths.
PayloadSink = Callable[[list[bytes], np.ndarray], None]


@dataclass
class FileState:
    name: str
    identity: tuple[int, int] | None = None  # (st_dev, st_ino)
    size: int = 0  # as seen by the previous read
    offset: int = 0  # first byte not consumed (a held-back record starts here)
    finished: bool = False  # a newer file exists: later growth is ignored, as TensorBoard does
    resyncing: bool = False  # lost the framing (bad length CRC): searching for a record
    noted_ignored: bool = False


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def note(out: SourceRead, file_name: str, reason: str, *, skipped: bool = True) -> None:
    if skipped:
        out.skipped += 1
    if len(out.problems) < MAX_PROBLEMS_PER_READ:
        out.problems.append(Problem(file_name, None, reason))


def read_records(
    f: BinaryIO,
    size: int,
    state: FileState,
    headers: dict[bytes, int],
    sink: PayloadSink,
    out: SourceRead,
) -> None:
    """Read the records of `f` from `state.offset` up to `size`; give the data of those whose
    CRC is right to `sink`. `headers` caches valid headers (see `_frame`)."""
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
            starts, pos, bad = _frame(buf, pos, len(buf), headers)
            _check_records(buf, starts, pos, base, state.name, sink, out)
            if bad:
                message = f"bad length CRC at byte {base + pos}: skipped to the next record"
                note(out, state.name, message)
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


def _check_records(
    buf: bytes,
    starts: list[int],
    end: int,
    base: int,
    file_name: str,
    sink: PayloadSink,
    out: SourceRead,
) -> None:
    """Check the data CRCs of the records starting at `starts` (the last one ends at
    `end`) and give those that pass to `sink`."""
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
            note(out, file_name, f"bad CRC at byte {base + starts[i]}: record skipped")
        keep = np.ones(count, dtype=bool)
        keep[bad] = False
        payloads = [p for p, k in zip(payloads, keep.tolist(), strict=True) if k]
        begin, stop = begin[keep], stop[keep]
    if payloads:
        sink(payloads, stop - begin)


def tail_payloads(path: Path, window: int) -> Iterator[bytes]:
    """The data of the records among the last `window` bytes of a file whose CRCs are right,
    newest first (lazily: each CRC is checked when its record is reached).

    Finds the first position in the window where a record with both CRCs right starts and
    frames forward from there.
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
            return
        pos = sync
    starts, end, _ = _frame(buf, pos, len(buf), {})
    stops = [*(s - 4 for s in starts[1:]), end - 4]
    for begin, stop in zip(reversed(starts), reversed(stops), strict=True):
        data = buf[begin + 12 : stop]
        if masked_crc(data) != struct.unpack_from("<I", buf, stop)[0]:
            continue
        yield data


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


def _first_record(buf: bytes) -> int | None:
    for pos in range(len(buf) - 16):
        length, crc = _HEADER.unpack_from(buf, pos)
        stop = pos + 12 + length
        if masked_crc(buf[pos : pos + 8]) != crc or stop + 4 > len(buf):
            continue
        if masked_crc(buf[pos + 12 : stop]) == struct.unpack_from("<I", buf, stop)[0]:
            return pos
    return None
