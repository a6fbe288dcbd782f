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

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

UTF8_BOM = b"\xef\xbb\xbf"
# Byte-order marks of encodings klwatch does not read (longest first: UTF-32 LE starts
# with UTF-16 LE's mark). Such a file is reported by its encoding, not as garbage lines.
FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
DEFAULT_MAX_LINE_BYTES = 1 << 20  # no honest metrics record is a megabyte long
DEFAULT_READ_BLOCK_BYTES = 16 << 20
# Stands in for a dropped overlong line: NUL bytes make sure no JSON parser accepts it.
LONG_LINE_MARKER = b"\x00klwatch:line-too-long\x00"


class RefusedFile(OSError):
    """A file klwatch will not open: not a regular file, or a link leaving its directory."""


def open_regular(path: str | os.PathLike[str], *, within: Path | None = None) -> BinaryIO:
    """Open `path` for reading, only if it is a regular file; never blocks.

    A FIFO, socket or device is refused before it is opened (opening a FIFO waits for a
    writer; /dev/zero never ends), and the open descriptor is checked again (the name may
    have been swapped in between). With `within` (a directory), a path that leads out of it
    through a symbolic link is refused too. Raises OSError naming the path.
    """
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if within is not None and not check_within(path, within):
        flags |= os.O_NOFOLLOW  # no link when checked: it must not have become one
    _require_regular(os.stat(path), path)
    fd = os.open(path, flags)
    try:
        _require_regular(os.fstat(fd), path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_within(path: Path, within: Path) -> bool:
    """Raise RefusedFile if `path` (below `within`) resolves outside `within`; True if a
    link had to be resolved to know.

    A file directly in `within` that is not a symlink costs one lstat: `within` itself was
    already found inside its root.
    """
    if path.parent == within and not stat.S_ISLNK(os.lstat(path).st_mode):
        return False
    real = os.path.realpath(path)
    if not Path(real).is_relative_to(os.path.realpath(within)):
        raise RefusedFile(
            errno.EXDEV, "a symbolic link out of the run directory: not followed", str(path)
        )
    return True


def refusal(path: Path, *, within: Path | None = None) -> str | None:
    """Why `open_regular` would refuse `path` ("<path>: <reason>"), found without opening
    it; None if it would not (or if there is no such file: an optional file may be absent)."""
    try:
        if within is not None:
            check_within(path, within)
        _require_regular(os.stat(path), path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    return None


def _require_regular(st: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile(
            errno.EINVAL, f"not a regular file ({_file_kind(st.st_mode)}): not read", str(path)
        )


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


def foreign_encoding(head: bytes) -> str | None:
    """'UTF-16' or 'UTF-32' if `head` (a file's first bytes) starts with that encoding's
    byte-order mark, else None."""
    for bom, name in FOREIGN_BOMS:
        if head.startswith(bom):
            return name
    return None


def foreign_encoding_problem(encoding: str) -> str:
    return f"{encoding} encoded file: klwatch reads UTF-8 (save the file as UTF-8)"


@dataclass
class TailChunk:
    """Complete lines read in one call, as (data, start, end): data[start:end] is whole lines.

    Blocks are handed over as read (no joining, no slicing copies): a cold load of a large
    file copies each byte as few times as possible.
    """

    blocks: list[tuple[bytes, int, int]] = field(default_factory=list)
    reset: bool = False  # the file was truncated/replaced: everything before is void
    encoding: str | None = None  # set once, when the file starts with a UTF-16/32 mark


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

        Raises OSError (FileNotFoundError, PermissionError, RefusedFile for a FIFO or a
        device) if the file cannot be opened. Which links it may follow was decided when
        the run was found (the root's rule).
        """
        with open_regular(self.path) as f:
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
            if self.offset == 0 and not self._skip_bom(f, chunk):
                return chunk  # only part of what may be a BOM so far: wait for the rest
            f.seek(self.offset)
            while True:
                block = f.read(self.read_block_bytes)
                if not block:
                    break
                self.offset += len(block)
                chunk.blocks.extend(self._take_complete(block))
        return chunk

    def _skip_bom(self, f: BinaryIO, chunk: TailChunk) -> bool:
        """At the start of the file: step over a UTF-8 BOM, name a UTF-16/32 one (the
        lines are still handed over: they read as damaged). False while undecidable."""
        head = f.read(4)  # the longest byte-order mark
        if head.startswith(UTF8_BOM):
            self.offset = len(UTF8_BOM)
        elif len(head) < len(UTF8_BOM) and UTF8_BOM.startswith(head):
            return False
        else:
            chunk.encoding = foreign_encoding(head)
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
