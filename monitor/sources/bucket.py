"""Runs in object storage (s3://, gs://, any installed fsspec protocol): a local mirror that
every format's reader reads as if the bucket were a disk.

A dashboard server cannot mount a bucket, and the readers are built for files that grow. So a
`BucketMirror` keeps, under klwatch's cache directory, a copy of the run files below a URL
and brings it up to date on a poll:

- append-only files (metrics.jsonl, TensorBoard events, verl JSONL, W&B .wandb, MLflow
  metric files) fetch only their new bytes with a ranged read when the object grew, and are
  fetched whole when it shrank (replaced);
- everything else a run holds (run.json, samples.jsonl, trainer_state.json, an MLflow or
  trackio SQLite database, MLflow's meta.yaml and params) is downloaded whole when its size or
  ETag changed — a database is read as that snapshot, and the page says so;
- nothing else is fetched: checkpoints and model weights beside the logs stay in the bucket.

Credentials and endpoints come from where the filesystem library looks (AWS environment
variables including AWS_ENDPOINT_URL, ~/.aws, Google application default credentials), never
from a command line. A sync that fails (no credentials, no bucket, throttling, a dropped
connection) keeps the mirror as it was, says why, and is retried with backoff; other roots
are not affected. klwatch never writes to the bucket.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

URL_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]*://")
DEFAULT_POLL_S = 10.0  # discovery lists the bucket at most this often
MAX_BACKOFF_S = 300.0
MAX_WHOLE_BYTES = 256 << 20  # a snapshot larger than this is not downloaded (said instead)

# Files that only grow: their new bytes are fetched with a ranged read.
APPEND_ONLY = re.compile(r"(^metrics\.jsonl$|^events\.out\.tfevents\..*|\.jsonl$|\.wandb$)")
# Files read whole when they change.
WHOLE = re.compile(r"(^run\.json$|^trainer_state\.json$|\.db$|^meta\.yaml$|^samples\.jsonl$)")
# MLflow's file store: mlruns/<experiment>/<run>/{metrics,params,tags}/<key, maybe nested>
MLFLOW_PARTS = ("metrics", "params", "tags")


def is_url(path: object) -> bool:
    """True for `s3://bucket/prefix`, `gs://…` and other fsspec URLs (not local paths)."""
    return (
        isinstance(path, str) and bool(URL_PATTERN.match(path)) and not path.startswith("file://")
    )


def cache_root() -> Path:
    """Where mirrors live: $KLWATCH_CACHE_DIR, else $XDG_CACHE_HOME/klwatch, else ~/.cache."""
    explicit = os.environ.get("KLWATCH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "klwatch" / "buckets"


def kind_of(relative: PurePosixPath) -> str | None:
    """'append', 'whole' or None (not a run file: left in the bucket)."""
    name = relative.name
    parents = relative.parts[:-1]
    if any(part in MLFLOW_PARTS for part in parents):
        return "append" if "metrics" in parents else "whole"
    if name == "samples.jsonl":
        return "whole"  # rewritten as a tail by some loggers; small
    if APPEND_ONLY.search(name):
        return "append"
    if WHOLE.search(name):
        return "whole"
    return None


@dataclass
class SyncReport:
    """What one sync did."""

    listed: int = 0  # run files found in the bucket
    fetched_bytes: int = 0  # bytes downloaded (ranged reads + whole files)
    changed: list[Path] = field(default_factory=list)  # local files written
    skipped: list[str] = field(default_factory=list)  # files not mirrored, and why


class BucketMirror:
    """The run files below one bucket URL, mirrored to a local directory on demand."""

    def __init__(
        self,
        url: str,
        *,
        cache: Path | None = None,
        poll_s: float = DEFAULT_POLL_S,
        filesystem: Any = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.poll_s = poll_s
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.local = (cache or cache_root()) / digest
        self.local.mkdir(parents=True, exist_ok=True)
        self._fs = filesystem
        self._known: dict[str, tuple[int, str]] = {}  # key -> (size, etag) last mirrored
        self._lock = threading.Lock()
        self._next_sync = 0.0  # monotonic time before which a due sync does nothing
        self._failures = 0
        self.problem: str | None = None  # why the last sync failed (said for this root)
        self.last_report = SyncReport()
        self.snapshots: set[str] = set()  # whole-file databases: read as snapshots

    # -- the filesystem ---------------------------------------------------------------------

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec  # only for buckets: a local dashboard never imports it

            protocol = self.url.split("://", 1)[0]
            self._fs = fsspec.filesystem(protocol)
        return self._fs

    def _bucket_path(self) -> str:
        """The URL as the filesystem names it (s3fs: `bucket/prefix`)."""
        return self.url.split("://", 1)[1]

    # -- syncing ----------------------------------------------------------------------------

    def sync_if_due(self) -> bool:
        """Sync when the poll interval (or the backoff after a failure) has passed; True if a
        sync ran and changed something."""
        if time.monotonic() < self._next_sync:
            return False
        return bool(self.sync().changed)

    def sync(self) -> SyncReport:
        """List the bucket and fetch what changed. Never raises for bucket trouble: the
        reason is kept in `problem` and the next sync waits (exponential backoff)."""
        with self._lock:
            try:
                report = self._sync()
            except Exception as e:  # no credentials, no bucket, network: this root only
                self._failures += 1
                backoff = min(MAX_BACKOFF_S, self.poll_s * 2 ** min(self._failures, 8))
                self._next_sync = time.monotonic() + backoff
                self.problem = f"{self.url}: {describe_error(e)} (retrying in {backoff:.0f} s)"
                return SyncReport()
            self._failures, self.problem = 0, None
            self._next_sync = time.monotonic() + self.poll_s
            self.last_report = report
            return report

    def _sync(self) -> SyncReport:
        report = SyncReport()
        base = self._bucket_path()
        self.fs.invalidate_cache()  # listings are cached by the library: each poll asks anew
        listing = self.fs.find(base, detail=True)
        if not listing and not self.fs.exists(base):
            raise FileNotFoundError(f"no such bucket or prefix: {self.url}")
        for key, meta in sorted(listing.items()):
            if meta.get("type") == "directory":
                continue
            relative = PurePosixPath(key).relative_to(PurePosixPath(base))
            if ".." in relative.parts:
                continue
            kind = kind_of(relative)
            if kind is None:
                continue
            report.listed += 1
            size = int(meta.get("size") or 0)
            etag = str(meta.get("ETag") or meta.get("etag") or meta.get("md5Hash") or "")
            if self._known.get(key) == (size, etag):
                continue
            target = self.local.joinpath(*relative.parts)
            if kind == "append":
                fetched = self._append(key, target, size)
            elif size > MAX_WHOLE_BYTES:
                report.skipped.append(f"{relative}: {size} bytes, larger than the snapshot cap")
                continue
            else:
                fetched = self._whole(key, target)
                if relative.suffix == ".db":
                    self.snapshots.add(str(relative))
            self._known[key] = (size, etag)
            report.fetched_bytes += fetched
            report.changed.append(target)
        return report

    def _append(self, key: str, target: Path, size: int) -> int:
        """Fetch the bytes the object has beyond the local copy (all of it if it shrank)."""
        have = target.stat().st_size if target.exists() else 0
        if size < have:
            return self._whole(key, target)  # replaced by a shorter object: start over
        if size == have:
            return 0
        data = self.fs.cat_file(key, start=have, end=size)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "ab") as f:
            f.write(data)
        return len(data)

    def _whole(self, key: str, target: Path) -> int:
        """Download the object next to `target` and rename it over (readers never see half)."""
        data = self.fs.cat_file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".klwatch-", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        return len(data)

    def display(self, local_path: Path) -> str:
        """The bucket URL a mirrored local path stands for (for people)."""
        try:
            relative = local_path.relative_to(self.local)
        except ValueError:
            return str(local_path)
        return self.url if not relative.parts else f"{self.url}/{relative.as_posix()}"


def describe_error(error: Exception) -> str:
    """A short reason for a failed sync, without the library's traceback."""
    name = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "NoCredentials" in name or "credentials" in text.lower():
        return "no credentials found (AWS_* environment variables, ~/.aws, or ADC for gs://)"
    if isinstance(error, FileNotFoundError):
        return text or "no such bucket or prefix"
    if isinstance(error, PermissionError):
        return f"access denied ({text})" if text else "access denied"
    return f"{name}: {text}" if text else name


_MIRRORS: dict[str, BucketMirror] = {}
_MIRRORS_LOCK = threading.Lock()


def mirror_for(url: str) -> BucketMirror:
    """The process's one mirror of `url` (the store, check and open_run share it)."""
    key = url.rstrip("/")
    with _MIRRORS_LOCK:
        mirror = _MIRRORS.get(key)
        if mirror is None:
            mirror = _MIRRORS[key] = BucketMirror(key)
        return mirror


def mirror_of(local_path: Path) -> BucketMirror | None:
    """The mirror a local path lies in, if any."""
    with _MIRRORS_LOCK:
        mirrors = list(_MIRRORS.values())
    for mirror in mirrors:
        if local_path == mirror.local or mirror.local in local_path.parents:
            return mirror
    return None
