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

import fnmatch
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from monitor.sources.base import RunLocation, Source, SourceRead, is_dir_entry

__all__ = [
    "FORMATS",
    "FORMAT_LABELS",
    "Format",
    "RunLocation",
    "Source",
    "SourceRead",
    "badge",
    "default_location",
    "find_runs",
    "is_run_file",
    "label",
    "locate_path",
    "open_source",
    "watch_keys",
]


@dataclass(frozen=True)
class Format:
    """One on-disk format: everything klwatch knows about it outside its own module."""

    module: str  # the module holding locate(), locate_file() and the reader
    reader: str  # its Source subclass
    label: str  # for people: "TensorBoard", "W&B", …
    badge: str  # the run list's badge colour (Streamlit: gray, orange, blue, …)
    run_files: tuple[str, ...]  # names (fnmatch) whose appearance may mean a new run
    data_file: str | None = None  # the file of a run directory that is read (root rule)


# The one table of formats. Modules are imported on first use; discovery asks every format
# about every directory, so each is imported by the first scan (the TensorBoard one, with
# protobuf and crc32c, costs ~65 ms once).
FORMATS: dict[str, Format] = {
    "klwatch": Format(
        "monitor.sources.klwatch",
        "KLWatchSource",
        "klwatch",
        "gray",
        ("metrics.jsonl",),
        data_file="metrics.jsonl",
    ),
    "tensorboard": Format(
        "monitor.sources.tensorboard",
        "TensorBoardSource",
        "TensorBoard",
        "orange",
        ("events.out.tfevents.*",),
    ),
    "verl": Format("monitor.sources.verl", "VerlSource", "verl", "blue", ("*.jsonl",)),
    "trackio": Format("monitor.sources.trackio", "TrackioSource", "trackio", "violet", ("*.db",)),
    "trainer_state": Format(
        "monitor.sources.trainer_state",
        "TrainerStateSource",
        "trainer_state.json",
        "green",
        ("trainer_state.json",),
    ),
    "wandb": Format("monitor.sources.wandb", "WandbSource", "W&B", "yellow", ("*.wandb",)),
    "mlflow": Format(
        "monitor.sources.mlflow", "MlflowSource", "MLflow", "blue", ("*.db", "meta.yaml")
    ),
}
FORMAT_LABELS = {name: f.label for name, f in FORMATS.items()}  # (a view of the table)
# A changed file marks the runs watching it or any folder above it, up to this many levels
# (MLflow's nested metric keys: mlruns/<exp>/<run>/metrics/train/kl).
WATCH_LEVELS = 6
SQLITE_SIDE_FILES = ("-wal", "-journal")  # a database's changes land in these first


def label(fmt: str) -> str:
    return FORMATS[fmt].label if fmt in FORMATS else fmt


def badge(fmt: str) -> str:
    return FORMATS[fmt].badge if fmt in FORMATS else "gray"


def is_run_file(name: str) -> bool:
    """A file whose appearance may mean a new run, in any format."""
    return any(fnmatch.fnmatchcase(name, p) for f in FORMATS.values() for p in f.run_files)


def watch_keys(path: Path) -> tuple[Path, ...]:
    """The watch paths (`RunLocation.watch_path`) a changed file may belong to: itself (a
    verl JSONL, a database), the folders above it (a run directory, a checkpoint's parent,
    MLflow's nested metric files), and a database for its write-ahead log or journal."""
    keys = [path, *list(path.parents)[:WATCH_LEVELS]]
    if path.name.endswith(SQLITE_SIDE_FILES):
        keys.append(path.with_name(path.name.rsplit("-", 1)[0]))
    return tuple(keys)


def looked_for() -> str:
    """What discovery looks for, for "no runs found" messages: every format and its files."""
    return ", ".join(f"{f.label} ({' or '.join(f.run_files)})" for f in FORMATS.values())


def default_location(path: Path) -> RunLocation:
    """How a bare directory is opened when no format claims it yet: as a klwatch run
    directory, so a run that has not written its first record still opens."""
    return RunLocation("klwatch", path)


DEFAULT_MAX_DEPTH = 6
SKIP_DIR_NAMES = frozenset({".git", ".venv", "__pycache__", "node_modules", ".hypothesis"})


def _module(fmt: str) -> ModuleType:
    return importlib.import_module(FORMATS[fmt].module)


def open_source(location: RunLocation) -> Source:
    """A reader for the run at `location` (nothing is read until `read()`)."""
    fmt = FORMATS[location.format]
    cls = getattr(importlib.import_module(fmt.module), fmt.reader)
    return cls(location)


def locate_dir(directory: Path, entries: list[os.DirEntry[str]]) -> list[RunLocation]:
    """Every run held directly in `directory`, in format order."""
    found: list[RunLocation] = []
    for fmt in FORMATS:
        found.extend(_module(fmt).locate(directory, entries))
    return found


def locate_file(path: Path) -> list[RunLocation]:
    """The runs a single file holds (a verl JSONL, a trackio DB), or []."""
    found: list[RunLocation] = []
    for fmt in FORMATS:
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
                if is_dir_entry(entry):
                    next_frontier.append((Path(entry.path), depth + 1))
        frontier = next_frontier


def _inside(location: RunLocation, real_root: Path) -> bool:
    data_file = FORMATS[location.format].data_file if location.format in FORMATS else None
    if data_file is not None:  # the file that is read must stay inside too
        return is_within(location.path / data_file, real_root)
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
