"""Read only the new bytes of a growing file, as complete lines.

`FileTail.read()` returns the complete lines appended since the last call as one bytes block
(so a fast parser sees megabytes at a time, not one Python object per line). It holds back a
line without its newline, drops a line longer than `max_line_bytes` without keeping it in
memory, and notices when the file was truncated or replaced (size shrank, inode changed) so
the caller can start over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 1 << 20  # no honest metrics record is a megabyte long
DEFAULT_READ_BLOCK_BYTES = 8 << 20


@dataclass
class TailChunk:
    """Complete lines read in one call, as (block, first line number) pairs.

    Each block ends with b"\\n"; line numbers are 1-based. Blocks are handed over as read
    (no joining) so a cold load of a large file copies each byte as few times as possible.
    """

    blocks: list[tuple[bytes, int]] = field(default_factory=list)
    reset: bool = False  # the file was truncated/replaced: everything before is void
    dropped_long_lines: list[int] = field(default_factory=list)  # line numbers skipped

    @property
    def data(self) -> bytes:
        return b"".join(block for block, _ in self.blocks)

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
        self._next_line = 1

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
                first_line = self._next_line
                complete = self._take_complete(block, chunk.dropped_long_lines)
                if complete:
                    chunk.blocks.append((complete, first_line))
        return chunk

    def _take_complete(self, block: bytes, dropped: list[int]) -> bytes:
        if self._skipping_long_line:
            newline = block.find(b"\n")
            if newline < 0:
                return b""  # still inside the overlong line: keep nothing of it
            # Keep its newline: the dropped line stays as an empty placeholder line, so the
            # line numbers of everything after it stay right.
            block = block[newline:]
            self._skipping_long_line = False
        data = self._pending + block if self._pending else block
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._pending = data
            self._drop_pending_if_too_long(dropped)
            return b""
        complete, self._pending = data[: last_newline + 1], data[last_newline + 1 :]
        self._drop_pending_if_too_long(dropped)
        self._next_line += complete.count(b"\n")
        return complete

    def _drop_pending_if_too_long(self, dropped: list[int]) -> None:
        if len(self._pending) > self.max_line_bytes:
            dropped.append(self._next_line)  # the pending line is always line _next_line
            self._pending = b""
            self._skipping_long_line = True
