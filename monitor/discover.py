"""Find run directories (those holding metrics.jsonl) under allowed roots.

Security: every directory returned resolves (real path, symlinks followed) to a place inside
the root it was found under, unless `follow_external_symlinks` is set. The dashboard and the
CLI only ever read runs that this module returned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from monitor.runlog import METRICS_FILE

DEFAULT_MAX_DEPTH = 6
SKIP_DIR_NAMES = frozenset({".git", ".venv", "__pycache__", "node_modules", ".hypothesis"})


def is_within(path: Path, root: Path) -> bool:
    """True if the real path of `path` is `root` or below it (root already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def find_run_dirs(
    root: str | os.PathLike[str],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    follow_external_symlinks: bool = False,
) -> Iterator[Path]:
    """Yield run directories under `root` (the root itself included), breadth first.

    Unreadable directories are passed over. A symlink whose target lies outside the root is
    ignored unless `follow_external_symlinks`; cycles are cut by remembering real paths.
    """
    real_root = Path(root).resolve()
    if not real_root.is_dir():
        return
    seen: set[Path] = set()
    frontier: list[tuple[Path, int]] = [(Path(root), 0)]
    while frontier:
        next_frontier: list[tuple[Path, int]] = []
        for directory, depth in frontier:
            try:
                real = directory.resolve()
            except OSError:
                continue
            if real in seen:
                continue
            seen.add(real)
            if not follow_external_symlinks and not real.is_relative_to(real_root):
                continue
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            metrics = [e for e in entries if e.name == METRICS_FILE and _is_file(e)]
            # metrics.jsonl itself may be a symlink out of the root: same rule as directories.
            if metrics and (
                follow_external_symlinks or is_within(Path(metrics[0].path), real_root)
            ):
                yield directory
            if depth >= max_depth:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name in SKIP_DIR_NAMES or entry.name.startswith("."):
                    continue
                if _is_dir(entry):
                    next_frontier.append((Path(entry.path), depth + 1))
        frontier = next_frontier


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
