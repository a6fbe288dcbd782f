"""A hand-written logger for tests and benchmarks: metrics.jsonl lines and nothing else (no
run.json), as a trainer's own code or a callback in another framework produces them."""

from __future__ import annotations

import json
import time
from pathlib import Path


class PlainLogger:
    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True)
        self.path = run_dir / "metrics.jsonl"

    def log(self, step: int, **values: float) -> None:
        line = json.dumps({"step": step, "time": time.time(), **values}) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def close(self) -> None:
        """Nothing to finish: the files are the whole record (RunWriter's interface)."""
