"""STUB: being written. Contract: see monitor/sources/__init__.py and base.py."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from monitor.sources.base import RunLocation, Source, SourceRead

FORMAT = "tensorboard"


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    return []


class TensorBoardSource(Source):
    format = FORMAT
    label = "tensorboard"

    def read(self) -> SourceRead:
        raise NotImplementedError

    def last_write_time(self) -> float | None:
        return None
