"""On-disk run formats. One module per format; everything after this package is format-blind.

Each format module has:
  FORMAT                         its machine name (RunLocation.format)
  locate(directory, entries)     the runs a directory itself holds (entries: its scandir)
  locate_file(path)  (optional)  the runs a single file holds (verl JSONL, trackio DB)
  a Source subclass              reads one run incrementally (monitor.sources.base)

`find_runs(root)` walks a root and asks every format; `locate_path(path)` answers for a path
a user typed (a run directory, a file, or a root of runs).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from monitor.sources.base import RunLocation, Source, SourceRead

__all__ = [
    "FORMAT_LABELS",
    "RunLocation",
    "Source",
    "SourceRead",
    "find_runs",
    "locate_path",
    "open_source",
]

# format → (module, Source class). Imported on first use; discovery asks every format about
# every directory, so each module is imported by the first scan (the TensorBoard one, with
# protobuf and crc32c, costs ~65 ms once).
_FORMATS: dict[str, tuple[str, str]] = {
    "klwatch": ("monitor.sources.klwatch", "KLWatchSource"),
    "tensorboard": ("monitor.sources.tensorboard", "TensorBoardSource"),
    "verl": ("monitor.sources.verl", "VerlSource"),
    "trackio": ("monitor.sources.trackio", "TrackioSource"),
    "trainer_state": ("monitor.sources.trainer_state", "TrainerStateSource"),
    "wandb": ("monitor.sources.wandb", "WandbSource"),
    "mlflow": ("monitor.sources.mlflow", "MlflowSource"),
}
FORMAT_LABELS = {
    "klwatch": "klwatch",
    "tensorboard": "TensorBoard",
    "verl": "verl",
    "trackio": "trackio",
    "trainer_state": "trainer_state.json",
    "wandb": "W&B",
    "mlflow": "MLflow",
}

DEFAULT_MAX_DEPTH = 6
SKIP_DIR_NAMES = frozenset({".git", ".venv", "__pycache__", "node_modules", ".hypothesis"})


def _module(fmt: str) -> ModuleType:
    return importlib.import_module(_FORMATS[fmt][0])


def open_source(location: RunLocation) -> Source:
    """A reader for the run at `location` (nothing is read until `read()`)."""
    module_name, class_name = _FORMATS[location.format]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(location)


def locate_dir(directory: Path, entries: list[os.DirEntry[str]]) -> list[RunLocation]:
    """Every run held directly in `directory`, in format order."""
    found: list[RunLocation] = []
    for fmt in _FORMATS:
        found.extend(_module(fmt).locate(directory, entries))
    return found


def locate_file(path: Path) -> list[RunLocation]:
    """The runs a single file holds (a verl JSONL, a trackio DB), or []."""
    found: list[RunLocation] = []
    for fmt in _FORMATS:
        locator = getattr(_module(fmt), "locate_file", None)
        if locator is not None:
            found.extend(locator(path))
    return found


def is_within(path: Path, root: Path) -> bool:
    """True if the real path of `path` is `root` or below it (root already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def find_runs(
    root: str | os.PathLike[str],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    follow_external_symlinks: bool = False,
) -> Iterator[RunLocation]:
    """Yield the runs under `root` (the root itself included), breadth first.

    Security: every location returned resolves (symlinks followed) inside the root unless
    `follow_external_symlinks`; cycles are cut by remembering real paths. Unreadable
    directories are passed over.
    """
    real_root = Path(root).resolve()
    if real_root.is_file():
        yield from locate_file(Path(root))
        return
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
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            for location in locate_dir(directory, entries):
                # The data file itself may be a symlink out of the root: same rule.
                if follow_external_symlinks or _inside(location, real_root):
                    yield location
            if depth >= max_depth:
                continue
            for entry in entries:
                if entry.name in SKIP_DIR_NAMES or entry.name.startswith("."):
                    continue
                if _is_dir(entry):
                    next_frontier.append((Path(entry.path), depth + 1))
        frontier = next_frontier


def _inside(location: RunLocation, real_root: Path) -> bool:
    if location.format == "klwatch":  # metrics.jsonl is what is read
        return is_within(location.path / "metrics.jsonl", real_root)
    return is_within(location.path, real_root)


def locate_path(path: str | os.PathLike[str], *, recursive: bool = True) -> list[RunLocation]:
    """The runs a user means by `path`: the run it is, or (recursive) the runs below it."""
    p = Path(path)
    if p.is_file():
        return locate_file(p)
    if not p.is_dir():
        return []
    if not recursive:
        try:
            entries = sorted(os.scandir(p), key=lambda e: e.name)
        except OSError:
            return []
        return locate_dir(p, entries)
    return list(find_runs(p))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
