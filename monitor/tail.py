"""Read only the new bytes of a growing file, as complete lines.

`FileTail.read()` returns the complete lines appended since the last call as large bytes
blocks (so a fast parser sees megabytes at a time, not one Python object per line). It holds
back a line without its newline, drops a line longer than `max_line_bytes` without keeping
it in memory, and notices when the file was truncated or replaced (size shrank, inode
changed) so the caller can start over.

The tail does not count lines (the parser counts them anyway, so counting here would be a
second pass over every byte). A dropped overlong line is replaced in the stream by
LONG_LINE_MARKER, so whoever counts lines still gets every later line number right.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 1 << 20  # no honest metrics record is a megabyte long
DEFAULT_READ_BLOCK_BYTES = 16 << 20
# Stands in for a dropped overlong line: NUL bytes make sure no JSON parser accepts it.
LONG_LINE_MARKER = b"\x00klwatch:line-too-long\x00"


@dataclass
class TailChunk:
    """Complete lines read in one call, as (data, start, end): data[start:end] is whole lines.

    Blocks are handed over as read (no joining, no slicing copies): a cold load of a large
    file copies each byte as few times as possible.
    """

    blocks: list[tuple[bytes, int, int]] = field(default_factory=list)
    reset: bool = False  # the file was truncated/replaced: everything before is void


class FileTail:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        read_block_bytes: int = DEFAULT_READ_BLOCK_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.read_block_bytes = read_block_bytes
        self._reset_state()

    def _reset_state(self) -> None:
        self.offset = 0  # bytes consumed (complete lines + pending)
        self._inode: tuple[int, int] | None = None
        self._pending = b""  # the start of a line whose newline has not arrived yet
        self._skipping_long_line = False

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def read(self) -> TailChunk:
        """Return the complete lines appended since the previous call.

        Raises FileNotFoundError / PermissionError (OSError) if the file cannot be opened.
        """
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            reset = False
            if self._inode is not None and (identity != self._inode or st.st_size < self.offset):
                self._reset_state()
                reset = True
            self._inode = identity
            chunk = TailChunk(reset=reset)
            if st.st_size == self.offset:
                return chunk
            if self.offset == 0 and not self._skip_bom(f):
                return chunk  # only part of what may be a BOM so far: wait for the rest
            f.seek(self.offset)
            while True:
                block = f.read(self.read_block_bytes)
                if not block:
                    break
                self.offset += len(block)
                chunk.blocks.extend(self._take_complete(block))
        return chunk

    def _skip_bom(self, f: BinaryIO) -> bool:
        """At the start of the file: step over a UTF-8 BOM. False while undecidable."""
        head = f.read(len(UTF8_BOM))
        if head == UTF8_BOM:
            self.offset = len(UTF8_BOM)
        elif len(head) < len(UTF8_BOM) and UTF8_BOM.startswith(head):
            return False
        return True

    def _take_complete(self, block: bytes) -> list[tuple[bytes, int, int]]:
        """Split a block read from disk into complete-line spans; keep the rest pending.

        Spans point into `block` (no slicing copies of megabytes); only the line that
        straddles two reads is joined into a small bytes object of its own.
        """
        spans: list[tuple[bytes, int, int]] = []
        start = 0
        if self._skipping_long_line:
            newline = block.find(b"\n")
            if newline < 0:
                return spans  # still inside the overlong line: keep nothing of it
            start = newline + 1
            self._skipping_long_line = False
            spans.append((LONG_LINE_MARKER + b"\n", 0, len(LONG_LINE_MARKER) + 1))
        if self._pending:
            newline = block.find(b"\n", start)
            if newline < 0:
                self._hold(self._pending + block[start:])
                return spans
            head = self._pending + block[start : newline + 1]
            spans.append((head, 0, len(head)))
            self._pending = b""
            start = newline + 1
        end = block.rfind(b"\n", start) + 1
        if end > start:
            spans.append((block, start, end))
        self._hold(block[max(start, end) :])
        return spans

    def _hold(self, partial: bytes) -> None:
        """Keep the start of an unfinished line, unless it is already absurdly long."""
        if len(partial) > self.max_line_bytes:
            self._pending = b""
            self._skipping_long_line = True
        else:
            self._pending = partial
