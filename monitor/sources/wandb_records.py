"""W&B run files' outer layer: the LevelDB log that frames the `.wandb` file into records.

The file is a 7-byte header (`:W&B`, uint16 LE 0xBEE1, version 0), then 32 KiB blocks
counted from offset 0; each block holds chunks (a 7-byte header: CRC-32 of the type byte and
the payload, payload length, type FULL / FIRST / MIDDLE / LAST), and a record is one FULL
chunk or FIRST, MIDDLE…, LAST. `_Framer` cuts complete records out of what was read, holds
back a chunk or a FIRST…LAST record cut at the end (a live run's normal state), and counts
damage as LevelDB's reader does. See `monitor.sources.wandb` for the whole format.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

FILE_HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
BLOCK_BYTES = 32 * 1024
CHUNK_HEADER_BYTES = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
MAX_RECORD_BYTES = 16 << 20  # no honest record is this large: skipped as damage

_CHUNK = struct.Struct("<IHB")
_TYPE_CRC = [zlib.crc32(bytes([kind])) for kind in range(256)]


@dataclass
class _Framed:
    records: list[tuple[int, bytes]] = field(default_factory=list)  # (file offset, payload)
    damage: list[tuple[int, str]] = field(default_factory=list)  # (file offset, why)


class _Framer:
    """Cuts a LevelDB log into records; remembers across reads whether fragments of a lost
    record are still to be dropped."""

    def __init__(self) -> None:
        self.dropping = False  # fragments (MIDDLE, LAST) of a lost record follow

    def frame(self, buf: bytes, base: int, pos: int, out: _Framed) -> int:
        """Add the complete records of buf[pos:] (buf[0] is at file offset `base`) to `out`;
        return where the next read must start: the first chunk not complete in `buf`, or the
        FIRST chunk of a record whose LAST is not there yet. It may lie past the end of `buf`
        (a damaged block is skipped as a whole)."""
        end = len(buf)
        unpack, crc32, type_crc = _CHUNK.unpack_from, zlib.crc32, _TYPE_CRC
        records = out.records
        first_at = -1  # buf position of the FIRST chunk of the record being assembled
        parts: list[bytes] = []
        size = 0
        suspect = False  # the previous chunk was bad: one more and the block is lost
        while True:
            left = BLOCK_BYTES - (base + pos) % BLOCK_BYTES
            if left < CHUNK_HEADER_BYTES:  # the block's zero trailer
                if end - pos < left:
                    break
                pos += left
                continue
            if end - pos < CHUNK_HEADER_BYTES:
                break
            crc, length, kind = unpack(buf, pos)
            stop = pos + CHUNK_HEADER_BYTES + length
            if kind == FULL and stop <= end and length <= left - CHUNK_HEADER_BYTES:
                payload = buf[pos + CHUNK_HEADER_BYTES : stop]  # the common case, first
                if crc32(payload, type_crc[FULL]) == crc:
                    if first_at >= 0:
                        out.damage.append((base + first_at, "a record cut short: skipped"))
                        first_at, parts = -1, []
                    records.append((base + pos, payload))
                    self.dropping = suspect = False
                    pos = stop
                    continue
            bad: str | None = None
            if not FULL <= kind <= LAST or length > left - CHUNK_HEADER_BYTES:
                if crc == 0 and length == 0 and kind == 0:
                    # Zeros: space the writer has not filled yet (or preallocated). Wait for
                    # the block to be complete; a block that ends in zeros is skipped.
                    block_end = pos + left
                    if block_end > end:
                        break
                    if buf.count(0, pos, block_end) == left:
                        pos = block_end
                        continue
                bad = "a chunk header that cannot be right"
            elif stop > end:
                break  # not fully written yet
            else:
                payload = buf[pos + CHUNK_HEADER_BYTES : stop]
                if crc32(payload, type_crc[kind]) != crc:
                    bad = "bad CRC"
            if bad is not None:
                lost = "record skipped" if not self.dropping or first_at >= 0 else "skipped"
                if suspect or bad != "bad CRC":
                    out.damage.append((base + pos, f"{bad}: rest of the block skipped"))
                    stop = pos + left  # the length cannot be trusted: go to the next block
                else:
                    out.damage.append((base + pos, f"{bad}: {lost}"))
                first_at, parts, size = -1, [], 0
                self.dropping, suspect = True, True
                pos = stop
                continue
            suspect = False
            if kind == FULL:  # (a FULL chunk that runs past its block is caught above)
                records.append((base + pos, payload))
                self.dropping = False
            elif kind == FIRST:
                if first_at >= 0:
                    out.damage.append((base + first_at, "a record cut short: skipped"))
                first_at, parts, size = pos, [payload], length
                self.dropping = False
            elif first_at < 0:  # MIDDLE or LAST without its FIRST
                if not self.dropping:
                    out.damage.append((base + pos, "a record's fragment without its start"))
                self.dropping = kind == MIDDLE
            else:
                parts.append(payload)
                size += length
                if size > MAX_RECORD_BYTES:
                    why = f"a record over {MAX_RECORD_BYTES >> 20} MiB: skipped"
                    out.damage.append((base + first_at, why))
                    first_at, parts, size = -1, [], 0
                    self.dropping = kind == MIDDLE
                elif kind == LAST:
                    records.append((base + first_at, b"".join(parts)))
                    first_at, parts, size = -1, [], 0
            pos = stop
        return first_at if first_at >= 0 else pos
