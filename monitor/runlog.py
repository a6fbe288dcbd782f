"""The run-directory contract and the one writer of it.

A run directory holds:
  metrics.jsonl  one JSON object per line, appended once per step (see REQUIRED_KEYS;
                 OPTIONAL_KEYS and any other numeric key may be added)
  run.json       name, created, schema_version, status, config; replaced atomically
  samples.jsonl  optional: a few generated responses with their reward every N steps

`docs/run-format.md` is the prose version of this module. Nothing here imports torch.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

SCHEMA_VERSION = 1
METRICS_FILE = "metrics.jsonl"
INFO_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"

# Only what every trainer has: a step and its mean KL. The rest of the KL picture is logged
# when the trainer has it; a rule whose series is absent stays silent and the page says
# "not logged" (TRL, OpenRLHF and verl log no max KL, and most never log β).
REQUIRED_KEYS = ("step", "time", "kl_mean")
OPTIONAL_KEYS = ("kl_max", "beta", "reward_mean")
# Keys the writer fills in itself; passing them to log() is a bug in the caller.
RESERVED_KEYS = frozenset({"step", "time"})
STATUSES = ("running", "finished", "failed")

# What one KL number means. TRL logs the per-sequence sum, OpenRLHF/verl/GRPO the per-token
# mean; they differ by the response length, so thresholds must know which one they read.
KL_UNITS = ("per_token", "per_sequence")

NO_TARGET_CONTROLLERS = ("none", "fixed")

DEFAULT_FSYNC_INTERVAL_S = 5.0


class RunLogError(ValueError):
    """A call that would break the run-log contract; nothing was written."""


def _check_metric(key: object, value: object) -> float:
    if not isinstance(key, str) or not key:
        raise RunLogError(f"metric name must be a non-empty string, got {key!r}")
    if key in RESERVED_KEYS:
        raise RunLogError(f"metric name {key!r} is reserved: the writer sets it itself")
    # bool is an Integral in Python, but True is not a measurement.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RunLogError(
            f"metric {key!r} must be a real number, got {type(value).__name__} {value!r}"
        )
    return float(value)


def encode_record(step: int, time_s: float, metrics: Mapping[str, float]) -> bytes:
    """One metrics.jsonl line. NaN/±Infinity are written as Python's bare tokens."""
    record: dict[str, Any] = {"step": step, "time": round(time_s, 6)}
    record.update(metrics)
    return (json.dumps(record, allow_nan=True, separators=(",", ":")) + "\n").encode()


def kl_meaning(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `kl` block of run.json: what the KL numbers in metrics.jsonl mean."""
    config = config or {}
    units = config.get("kl_units", "per_token")
    if units not in KL_UNITS:
        raise RunLogError(f"config kl_units must be one of {KL_UNITS}, got {units!r}")
    controller = config.get("kl_controller")
    # A target only means something to a controller that steers toward it: a fixed-β or
    # no-penalty run with a default target_kl in its config has no target KL.
    target = None if controller in NO_TARGET_CONTROLLERS else config.get("target_kl")
    return {
        "units": units,
        "estimator": config.get("kl_estimator"),
        "controller": controller,
        "target": target,
    }


def write_json_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers never see half."""
    data = json.dumps(document, indent=2, sort_keys=True, allow_nan=True, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a team dashboard running as another user must read it.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_os_error():
            os.unlink(tmp)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _suppress_os_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, *_: object) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


class RunWriter:
    """Appends one record per step to a run directory; the only way klwatch writes runs.

    Guarantees: each record is one `os.write` of one line, so a crash leaves at most one torn
    line; when `log()` returns the bytes are in the OS, so `kill -9` loses nothing `log()`
    returned; fsync at most every `fsync_interval_s` and on close; run.json replaced
    atomically. Errors (full disk, permission) raise `OSError` naming the path.

    A record needs only `kl_mean` besides its step (`writer.log(step, kl_mean=0.01)`);
    `kl_max`, `beta`, `reward_mean` and any other real number are logged when given.
    `require_kl_keys=False` drops even `kl_mean` (a logger copying another trainer's names).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
        *,
        extra_info: Mapping[str, Any] | None = None,
        require_kl_keys: bool = True,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.info_path = self.run_dir / INFO_FILE
        self.samples_path = self.run_dir / SAMPLES_FILE
        self._clock = clock
        self._require_kl_keys = require_kl_keys
        self._fsync_interval_s = fsync_interval_s
        self._closed = False
        self._last_step: int | None = None

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                e.errno, f"cannot create run directory {self.run_dir}: {e.strerror}"
            ) from e

        previous = self._read_previous_info()
        now = self._clock()
        self.info: dict[str, Any] = {
            **previous,
            **dict(extra_info or {}),
            "schema_version": SCHEMA_VERSION,
            "name": name or previous.get("name") or self.run_dir.name,
            "created": previous.get("created", now),
            "updated": now,
            "status": "running",
            "kl": kl_meaning(config) if config is not None else previous.get("kl", kl_meaning({})),
            "config": dict(config) if config is not None else previous.get("config", {}),
        }
        self._fd = self._open_append(self.metrics_path)
        self._last_fsync = time.monotonic()
        self._terminate_torn_line()
        self._write_info()

    # -- public API -------------------------------------------------------------------------

    def log(self, step: int, **metrics: float) -> None:
        """Append one record. Raises RunLogError (writes nothing) on a bad call."""
        if self._closed:
            raise RunLogError(f"log() on a closed RunWriter for {self.run_dir}")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise RunLogError(f"step must be an integer >= 0, got {step!r}")
        values = {key: _check_metric(key, value) for key, value in metrics.items()}
        if self._require_kl_keys:
            missing = [k for k in REQUIRED_KEYS if k not in RESERVED_KEYS and k not in values]
            if missing:
                raise RunLogError(f"record for step {step} lacks required keys {missing}")
        self._append(self._fd, self.metrics_path, encode_record(int(step), self._clock(), values))
        self._last_step = int(step)
        if time.monotonic() - self._last_fsync >= self._fsync_interval_s:
            self._fsync()

    def log_samples(self, step: int, samples: Iterable[Mapping[str, Any]]) -> None:
        """Append generated responses (e.g. {"prompt", "response", "reward"}) for `step`."""
        lines = []
        for sample in samples:
            record = {"step": int(step), "time": round(self._clock(), 6), **dict(sample)}
            lines.append(json.dumps(record, allow_nan=True, default=str) + "\n")
        if not lines:
            return
        fd = self._open_append(self.samples_path)
        try:
            self._append(fd, self.samples_path, "".join(lines).encode())
        finally:
            os.close(fd)

    def set_info(self, **fields: Any) -> None:
        """Add or replace top-level run.json fields (e.g. the command line); atomic."""
        reserved = {"schema_version", "created", "status"} & fields.keys()
        if reserved:
            raise RunLogError(f"run.json fields {sorted(reserved)} are managed by RunWriter")
        self.info.update(fields)
        self._write_info()

    def close(self, status: str = "finished") -> None:
        if status not in STATUSES:
            raise RunLogError(f"status must be one of {STATUSES}, got {status!r}")
        if self._closed:
            return
        self._closed = True
        try:
            self._fsync()
        finally:
            os.close(self._fd)
            self.info["status"] = status
            self._write_info()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close("failed" if exc_type is not None else "finished")

    @property
    def last_step(self) -> int | None:
        return self._last_step

    # -- internals --------------------------------------------------------------------------

    def _read_previous_info(self) -> dict[str, Any]:
        """On resume keep name/created/config of the existing run.json (if it is readable)."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _open_append(path: Path) -> int:
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise OSError(e.errno, f"cannot open {path} for appending: {e.strerror}") from e

    @staticmethod
    def _append(fd: int, path: Path, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as e:
            raise OSError(e.errno, f"cannot append to {path}: {e.strerror}") from e

    def _terminate_torn_line(self) -> None:
        """A crash may have left a line without its newline; end it so our first record
        does not glue onto it (readers then skip the torn line as one bad record)."""
        try:
            size = os.fstat(self._fd).st_size
            if size == 0:
                return
            with open(self.metrics_path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    self._append(self._fd, self.metrics_path, b"\n")
        except OSError as e:
            raise OSError(
                e.errno, f"cannot check the end of {self.metrics_path}: {e.strerror}"
            ) from e

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise OSError(e.errno, f"cannot fsync {self.metrics_path}: {e.strerror}") from e
        self._last_fsync = time.monotonic()

    def _write_info(self) -> None:
        self.info["updated"] = self._clock()
        try:
            write_json_atomic(self.info_path, self.info)
        except OSError as e:
            raise OSError(e.errno, f"cannot write {self.info_path}: {e.strerror}") from e
