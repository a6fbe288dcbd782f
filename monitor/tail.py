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

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 1 << 20  # no honest metrics record is a megabyte long
DEFAULT_READ_BLOCK_BYTES = 16 << 20
# Stands in for a dropped overlong line: NUL bytes make sure no JSON parser accepts it.
LONG_LINE_MARKER = b"\x00klwatch:line-too-long\x00"


@dataclass
class TailChunk:
    """Complete lines read in one call, as (data, end) pairs: data[:end] ends with b"\\n".

    Blocks are handed over as read (no joining, no slicing copies): a cold load of a large
    file copies each byte as few times as possible.
    """

    blocks: list[tuple[bytes, int]] = field(default_factory=list)
    reset: bool = False  # the file was truncated/replaced: everything before is void

    @property
    def data(self) -> bytes:
        return b"".join(data[:end] for data, end in self.blocks)

    @property
    def empty(self) -> bool:
        return not self.blocks


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
            f.seek(self.offset)
            while True:
                block = f.read(self.read_block_bytes)
                if not block:
                    break
                if self.offset == 0 and block.startswith(UTF8_BOM):
                    self.offset += len(UTF8_BOM)
                    block = block[len(UTF8_BOM) :]
                self.offset += len(block)
                complete = self._take_complete(block)
                if complete is not None:
                    chunk.blocks.append(complete)
        return chunk

    def _take_complete(self, block: bytes) -> tuple[bytes, int] | None:
        prefix = b""
        if self._skipping_long_line:
            newline = block.find(b"\n")
            if newline < 0:
                return None  # still inside the overlong line: keep nothing of it
            block = block[newline + 1 :]
            self._skipping_long_line = False
            prefix = LONG_LINE_MARKER + b"\n"
        data = prefix + self._pending + block if (prefix or self._pending) else block
        end = data.rfind(b"\n") + 1
        self._pending = data[end:]
        if len(self._pending) > self.max_line_bytes:
            self._pending = b""
            self._skipping_long_line = True
        return (data, end) if end else None
