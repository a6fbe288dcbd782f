"""W&B run files: `wandb/run-<date>-<id>/run-<id>.wandb` (online) and
`wandb/offline-run-<date>-<id>/run-<id>.wandb` (offline), read without the `wandb` package.

The dashboard server stays light: `wandb` ties protobuf's major version and its proto module
imports the whole SDK, so the few messages klwatch needs are decoded here by a small
protobuf wire decoder. Facts this reader rests on (checked against wandb 0.31.0: its
`wandb/proto/wandb_internal_pb2.py` descriptors, and files its wandb-core wrote):

* The file is a LevelDB log: a 7-byte header (`:W&B`, uint16 LE 0xBEE1, version 0), then
  32 KiB blocks counted from offset 0 (the header sits in block 0). A chunk is a 7-byte
  header — uint32 LE CRC-32 (zlib's IEEE CRC, unmasked) of the type byte followed by the
  payload, uint16 LE payload length, uint8 type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4 — and
  its payload; a chunk never crosses a block; fewer than 7 bytes left in a block are zero
  padding. A record is one FULL chunk or FIRST, MIDDLE…, LAST.
* Each record is a protobuf `Record`: 1 num, 2 history, 3 summary, 5 config, 17 run,
  18 exit (others ignored). HistoryRecord: 1 item, 2 step (HistoryStep: 1 num). HistoryItem:
  1 key or 2 nested_key (repeated: "a.b", as W&B shows a nested dict), 16 value_json (NaN and
  ±Infinity as the bare JSON tokens), 5 integer (sint64), 6 number (double). RunRecord:
  1 run_id, 3 project, 4 config, 8 display_name, 17 start_time (seconds, nanos),
  18 resumed. ConfigRecord: 1 update, 2 remove (ConfigItem: 1 key, 2 nested_key,
  16 value_json). RunExitRecord: 1 exit_code. wandb-core writes every item with
  `nested_key` (one element per name); the Python writer before it used `key`. Both are
  read.
* While a run is live, wandb-core writes whole 32 KiB blocks, and flushes a partial block
  every ~15 s when logging is slow; `run.finish()` writes the rest. A live run is therefore
  seen up to one block (or ~15 s) late, and a chunk or a FIRST…LAST record cut at the end
  of the file is normal: it is held back (the byte offset stays at its start) and read once
  complete, never reported as damage.

Reading rules:

* One run per run directory; the location is the directory. `latest-run` (a symlink to the
  newest run directory) is reported under the directory it points to, never as a second run
  (the walker visits it first and then skips the real directory as already seen). A resumed
  run (`wandb.init(id=…, resume=…)`) is a new directory with the same id: a second run,
  named "<name> (resumed)", `info["wandb"]["resumes"]` naming the directory before it (an
  offline file cannot say it resumed: RunRecord.resumed is set by the server).
* Rows come from history records, one per `wandb.log` commit. The step is
  `train/global_step` when the run logs it (transformers' WandbCallback logs without a step
  and adds it; OpenRLHF does too); a row without it in such a run takes the last global
  step. Otherwise the step is the history step (`_step`, what verl passes as `step=`).
  Consecutive rows with the same step are merged (transformers logs the train and the eval
  metrics of one step in two calls): a later value wins unless it is NaN. A merged row whose
  first part was handed over in an earlier read is handed over again (it supersedes).
* Columns are the numeric items under their logged names (`train/kl`); `_timestamp` is the
  row's "time"; `_step`, `_runtime` and `_wandb.*` are W&B's own and not columns; strings,
  booleans, media and tables are not series. A logged key named "time" or "step" becomes
  "time (key)" / "step (key)".
* `info`: name = display_name (else the run id), config = the run's config (`run.config`
  then every `config.update`, values decoded from value_json), status "running" until the
  exit record ("finished" with exit code 0, else "failed"), created = start_time.
* Damage is counted, never fatal: a chunk whose CRC is wrong loses its record (one
  `Problem`, byte offset in the reason) and reading goes on with the next chunk; a chunk
  header that cannot be right (a bad type, a length past its block) or a second bad chunk
  in a row loses the rest of that block, as LevelDB's reader does; fragments of a lost
  record are dropped with it. A file without the W&B header is reported and not read. A
  file that shrank or was replaced is read again from the start (`SourceRead.reset`).

Speed (100k steps × 30 metrics, a 117 MB file: ~1.4 s of CPU cold, ~2 ms to read 100 more
steps): the one Python loop per chunk frames and checks CRCs (zlib); records are dispatched
on their first bytes (a summary, one per history row, costs a byte compare). The history
records of a read are decoded together with numpy: every value tag (`82 01`) found at once,
each item's header and value checked against each other, the keys dictionary-encoded and the
numeric values parsed by Arrow, each in one call — no Python per item. Any record of another
shape (older writers, damage) goes through the general wire decoder, which is bounds-checked:
hostile bytes raise `_Damaged`, never loop, and cost only that record.

The code follows the data path: `wandb_records` (the LevelDB framing), `wandb_proto` (the
wire decoder and the Record, RunRecord, ConfigRecord fields), `wandb_history` (history
records in bulk, values as numbers), and here the discovery and the reader.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from monitor.sources.base import MAX_PROBLEMS_PER_READ, RunLocation, Source, SourceRead
from monitor.sources.parse import ParsedBlock, Problem
from monitor.sources.rows import merge_equal_steps
from monitor.sources.tail import open_regular
from monitor.sources.wandb_history import (
    _history_fast,
    _history_general,
    _integral,
    _Items,
    _numbers,
)
from monitor.sources.wandb_proto import (
    _CONFIG,
    _EXIT,
    _HISTORY,
    _RUN,
    _Damaged,
    _Meta,
    _record_type,
    _take_meta,
    _text,
)
from monitor.sources.wandb_records import BLOCK_BYTES, FILE_HEADER, _Framed, _Framer

FORMAT = "wandb"
DATA_PREFIX = "run-"
DATA_SUFFIX = ".wandb"
READ_BYTES = 128 * BLOCK_BYTES  # 4 MiB read (and decoded) at a time
MAX_KEYS = 1000  # distinct metric names per run (verl logs ~150; a hostile file, any number)
MAX_GRID_CELLS = 8 << 20  # rows × names decoded at once (64 MiB of float64)
MAX_KEY_BYTES = 512
INFO_HEAD_BYTES = 8 * BLOCK_BYTES  # where the run and config records are looked for alone
PEEK_BYTES = 2 * BLOCK_BYTES  # where the exit record and the last step are looked for alone
GLOBAL_STEP_KEY = "train/global_step"  # transformers' WandbCallback, OpenRLHF
TIME_COLUMN = "time"
_RESERVED_NAMES = frozenset({TIME_COLUMN, "step"})
_INTERNAL_KEYS = frozenset({"_step", "_runtime", "_timestamp"})
_RUN_DIR = re.compile(r"(?:offline-)?run-(?P<start>\d{8}_\d{6})-(?P<id>.+)")

# Column roles
_METRIC, _INTERNAL, _STEP, _TIME, _GLOBAL_STEP = 0, 1, 2, 3, 4


# -- discovery -------------------------------------------------------------------------------


def locate(directory: Path, entries: Sequence[os.DirEntry[str]]) -> list[RunLocation]:
    if data_file_name(directory, [e.name for e in entries if _is_data_file(e)]) is None:
        return []
    if os.path.islink(directory):
        # `latest-run`: name the run by the directory it points to (see the docstring)
        target = Path(os.path.normpath(directory.parent / os.readlink(directory)))
        return [RunLocation(FORMAT, target)]
    return [RunLocation(FORMAT, directory)]


def locate_file(path: Path) -> list[RunLocation]:
    """The run a `.wandb` file belongs to (its directory)."""
    if _is_data_name(path.name) and path.is_file():
        return [RunLocation(FORMAT, path.parent)]
    return []


def data_file_name(directory: Path, names: Sequence[str]) -> str | None:
    """The run's data file among `names`: run-<id>.wandb for the id the directory is named
    after, else the first such file by name."""
    candidates = sorted(n for n in names if _is_data_name(n))
    if not candidates:
        return None
    match = _RUN_DIR.fullmatch(directory.name)
    expected = f"{DATA_PREFIX}{match['id']}{DATA_SUFFIX}" if match else None
    return expected if expected in candidates else candidates[0]


def _earlier_segment(directory: Path) -> str | None:
    """The newest sibling run directory with the same run id created before `directory`
    (names hold the start time): the run this one resumed."""
    own = _start_and_id(directory.name)
    if own is None:
        return None
    try:
        names = os.listdir(directory.parent)
    except OSError:
        return None
    earlier = [
        (key, name)
        for name in names
        if (key := _start_and_id(name)) is not None and key[1] == own[1] and key < own
    ]
    return max(earlier)[1] if earlier else None


def _start_and_id(name: str) -> tuple[str, str] | None:
    match = _RUN_DIR.fullmatch(name)
    return None if match is None else (match["start"], match["id"])


def _is_data_name(name: str) -> bool:
    return name.startswith(DATA_PREFIX) and name.endswith(DATA_SUFFIX) and len(name) > 10


def _is_data_file(entry: os.DirEntry[str]) -> bool:
    if not _is_data_name(entry.name):
        return False
    try:
        return entry.is_file()
    except OSError:
        return False


class WandbSource(Source):
    format = FORMAT
    label = "W&B"
    live_note = (
        "W&B writes its run file in 32 KiB blocks while the run is live (a partial block about "
        "every 15 s when logging is slow): the newest steps appear up to one block late."
    )

    def __init__(self, location: RunLocation) -> None:
        super().__init__(location)
        self.data_path = self._find_data_file()
        self._resumes = _earlier_segment(self.path)
        self._reset_state()
        self._info_version = 0
        self._info_seen = -1
        self._light_stamp: tuple[Any, ...] | None = None
        # column ids: raw key bytes (a name, "a.b" for nested keys) → id, id → name / role
        self._key_ids: dict[bytes, int] = {}
        self._names: list[str] = []
        self._roles: list[int] = []
        self._noted_key_cap = False
        self._publish_info()

    def _reset_state(self) -> None:
        self._offset = 0  # next byte to frame (past the header once it is read)
        self._identity: tuple[int, int] | None = None
        self._size = 0
        self._framer = _Framer()
        self._header_ok: bool | None = None
        self._foreign = False  # the probe found no W&B header
        self._meta = _Meta()
        self._uses_global_step = False
        self._last_global_step: int | None = None
        self._last_wandb_step = -1
        self._carry: tuple[int, dict[str, float]] | None = None  # the last row handed over
        self._last_step: int | None = None
        self._reading = False

    def _find_data_file(self) -> Path:
        try:
            names = os.listdir(self.path)
        except OSError:
            names = []
        name = data_file_name(self.path, names)
        if name is None:
            match = _RUN_DIR.fullmatch(self.path.name)
            name = f"{DATA_PREFIX}{match['id'] if match else self.path.name}{DATA_SUFFIX}"
        return self.path / name

    # -- Source API -------------------------------------------------------------------------

    def read(self) -> SourceRead:
        out = SourceRead()
        self._reading = True
        if not self.data_path.exists():
            self.data_path = self._find_data_file()
        with open_regular(self.data_path, within=self.path) as f:  # no FIFO, no link out
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            if self._identity is not None and (
                identity != self._identity or st.st_size < self._size
            ):
                why = "replaced" if identity != self._identity else "truncated"
                self._reset_state()
                self._reading = True
                self._publish_info()
                out.reset = f"{self.data_path.name} was {why}: read again from the start"
            self._identity, self._size = identity, st.st_size
            if self._header_ok is None and not self._read_header(f, st.st_size, out):
                return out
            if self._header_ok:
                self._read_records(f, st.st_size, out)
        return out

    def refresh_info(self) -> bool:
        """True if `info` changed since the previous call. Before the first `read()` (the
        sidebar's probe), the run and config records are looked for at the start of the
        file and the exit record at its end, whenever the file changed."""
        if not self._reading:
            stamp = self.stamp()
            if stamp != self._light_stamp:
                self._light_stamp = stamp
                self._scan_info()
        if self._info_version == self._info_seen:
            return False
        self._info_seen = self._info_version
        return True

    def last_write_time(self) -> float | None:
        try:
            return os.stat(self.data_path).st_mtime
        except OSError:
            return None

    def peek_last_step(self) -> int | None:
        if self._last_step is not None:
            return self._last_step
        try:
            framed = self._frame_window(-PEEK_BYTES)
        except OSError:
            return None
        for offset, payload in reversed(framed.records):
            with contextlib.suppress(_Damaged, IndexError):
                kind, a, b = _record_type(payload)
                if kind != _HISTORY:
                    continue
                items, steps, kept = self._history([payload[a:b]], [offset], None)
                block = self._rows(items, steps, kept, peek=True)
                if block is not None and block.n:
                    return int(block.steps[-1])
        return None

    def stamp(self) -> tuple[Any, ...]:
        try:
            st = os.stat(self.data_path)
        except OSError:
            return (None,)
        return ((st.st_ino, st.st_mtime_ns, st.st_size),)

    @property
    def default_name(self) -> str:
        name = self.data_path.name
        return name[len(DATA_PREFIX) : -len(DATA_SUFFIX)] or self.path.name

    # -- reading ----------------------------------------------------------------------------

    def _read_header(self, f: BinaryIO, size: int, out: SourceRead) -> bool:
        """Check the file header; False if it is not all there yet."""
        if size < len(FILE_HEADER):
            return False
        f.seek(0)
        head = f.read(len(FILE_HEADER))
        if len(head) < len(FILE_HEADER):
            return False
        self._header_ok = head == FILE_HEADER
        self._publish_info()
        if self._header_ok:
            self._offset = len(FILE_HEADER)
        else:
            why = "no W&B header (:W&B, 0xBEE1, version 0): not read"
            if head[:6] == FILE_HEADER[:6]:
                why = f"W&B log version {head[6]}, not 0: not read"
            out.problems.append(Problem(self.data_path.name, None, why))
            out.skipped += 1
        return True

    def _read_records(self, f: BinaryIO, size: int, out: SourceRead) -> None:
        base = self._offset
        f.seek(base)
        buf = f.read(max(0, min(READ_BYTES, size - base)))
        while buf:
            framed = _Framed()
            pos = self._framer.frame(buf, base, 0, framed)
            for offset, why in framed.damage:
                self._note(out, f"byte {offset}: {why}")
            self._decode(framed.records, out)
            base, read_to = base + pos, base + len(buf)
            if base > read_to:
                f.seek(base)
                read_to = base
            more = f.read(max(0, min(READ_BYTES, size - read_to)))
            if not more:
                break
            buf = buf[pos:] + more if pos < len(buf) else more
        self._offset = base

    def _note(self, out: SourceRead, why: str, *, skipped: bool = True) -> None:
        if skipped:
            out.skipped += 1
        if len(out.problems) < MAX_PROBLEMS_PER_READ:
            out.problems.append(Problem(self.data_path.name, None, why))

    def _decode(self, records: list[tuple[int, bytes]], out: SourceRead) -> None:
        hists: list[bytes] = []
        offsets: list[int] = []
        meta_changed = False
        for offset, payload in records:
            try:
                kind, a, b = _record_type(payload)
                if kind == _HISTORY:
                    hists.append(payload[a:b])
                    offsets.append(offset)
                elif kind in (_RUN, _CONFIG, _EXIT):
                    _take_meta(self._meta, kind, payload, a, b)
                    meta_changed = True
            except (_Damaged, IndexError) as e:
                self._note(out, f"byte {offset}: a record that is not W&B's ({e}): skipped")
        if meta_changed:
            self._publish_info()
        if not hists:
            return
        items, steps, kept = self._history(hists, offsets, out)
        # rows × columns is held as a grid: bounded (a hostile file may use many names)
        chunk = max(1, MAX_GRID_CELLS // max(1, len(self._names)))
        if steps.size <= chunk:
            block = self._rows(items, steps, kept, out=out)
            if block is not None:
                out.blocks.append(block)
            return
        order = np.argsort(items.rows, kind="stable")
        items = _Items(items.rows[order], items.kids[order], items.values[order])
        for begin in range(0, steps.size, chunk):
            lo, hi = np.searchsorted(items.rows, [begin, begin + chunk])
            part = _Items(items.rows[lo:hi] - begin, items.kids[lo:hi], items.values[lo:hi])
            end = begin + chunk
            block = self._rows(part, steps[begin:end], kept[begin:end], out=out)
            if block is not None:
                out.blocks.append(block)

    # -- history ----------------------------------------------------------------------------

    def _history(
        self, hists: list[bytes], offsets: list[int], out: SourceRead | None
    ) -> tuple[_Items, np.ndarray, np.ndarray]:
        """The numeric items of history records (one row each), each row's HistoryStep
        (-1: none), and which rows were read (a damaged record is skipped)."""
        steps = np.full(len(hists), -1, dtype=np.int64)
        kept = np.ones(len(hists), dtype=bool)
        items, slow, bad = _history_fast(hists, steps, self._key_id)
        rows: list[int] = []
        kids: list[int] = []
        tokens: list[bytes] = []
        for row in slow:  # (none, for what wandb-core writes)
            try:
                pairs, steps[row] = _history_general(hists[row], self._key_id)
            except (_Damaged, IndexError) as e:
                kept[row] = False
                if out is not None:
                    why = f"a history record that is not W&B's ({e}): skipped"
                    self._note(out, f"byte {offsets[row]}: {why}")
                continue
            for kid, token in pairs:
                rows.append(row)
                kids.append(kid)
                tokens.append(token)
        numeric, values, more_bad = _numbers(tokens)
        bad += more_bad
        if bad and out is not None:
            self._note(out, f"{bad} history values are not numbers or null: skipped", skipped=False)
        more = _Items(
            np.asarray(rows, dtype=np.int64)[numeric],
            np.asarray(kids, dtype=np.int64)[numeric],
            values,
        )
        return items.concat(more), steps, kept

    def _key_id(self, raw: bytes) -> int:
        """The column id of a key (-1: refused: too long, or past MAX_KEYS)."""
        kid = self._key_ids.get(raw)
        if kid is not None:
            return kid
        if len(raw) > MAX_KEY_BYTES or len(self._names) >= MAX_KEYS:
            self._noted_key_cap = True
            return -1
        name = _text(raw)
        if name in _INTERNAL_KEYS or name == "_wandb" or name.startswith("_wandb."):
            role = {"_step": _STEP, "_timestamp": _TIME}.get(name, _INTERNAL)
        elif name == GLOBAL_STEP_KEY:
            role = _GLOBAL_STEP
        else:
            role = _METRIC
            if name in _RESERVED_NAMES:
                name = f"{name} (key)"
        kid = self._key_ids[raw] = len(self._names)
        self._names.append(name)
        self._roles.append(role)
        return kid

    def _rows(
        self,
        items: _Items,
        wandb_steps: np.ndarray,
        kept: np.ndarray,
        *,
        out: SourceRead | None = None,
        peek: bool = False,
    ) -> ParsedBlock | None:
        """History rows (one per record; `kept`: not damaged) as one block, see the module
        docstring for the step rules. With `peek`, nothing is remembered."""
        rows = wandb_steps.size
        if self._noted_key_cap and out is not None:
            self._noted_key_cap = False
            why = f"more than {MAX_KEYS} metric names (or a name over {MAX_KEY_BYTES} bytes)"
            self._note(out, f"{why}: the rest are not read", skipped=False)
        if rows == 0:
            return None
        kids, row_of, values = items.kids, items.rows, items.values
        roles = np.asarray(self._roles, dtype=np.int8)[kids]
        present = np.unique(kids)
        column_of = np.full(len(self._names), -1, dtype=np.int64)
        column_of[present] = np.arange(present.size)
        grid = np.full((present.size, rows), np.nan)
        grid[column_of[kids], row_of] = values

        def role_column(role: int) -> np.ndarray | None:
            hit = present[np.asarray(self._roles, dtype=np.int8)[present] == role]
            return grid[column_of[hit[0]]] if hit.size else None

        steps = self._steps(wandb_steps, role_column(_GLOBAL_STEP), role_column(_STEP), peek)
        has_metric = (np.bincount(row_of[roles == _METRIC], minlength=rows) > 0) & kept
        columns: dict[str, np.ndarray] = {}
        times = role_column(_TIME)
        if times is not None:
            columns[TIME_COLUMN] = times[has_metric]
        for kid, row in zip(present.tolist(), grid, strict=True):
            if self._roles[kid] in (_METRIC, _GLOBAL_STEP):
                columns[self._names[kid]] = row[has_metric]
        steps = steps[has_metric]
        if not steps.size:
            return None
        carry = self._carry
        if carry is not None and carry[0] == steps[0]:
            # the first rows continue the last row handed over: merge, hand it over again
            missing = np.full(steps.size, np.nan)
            names = dict.fromkeys([*carry[1], *columns])
            columns = {
                name: np.r_[carry[1].get(name, np.nan), columns.get(name, missing)]
                for name in names
            }
            steps = np.r_[steps[:1], steps]
        steps, columns = merge_equal_steps(steps, columns)
        if not peek:
            self._carry = (
                int(steps[-1]),
                {name: float(v[-1]) for name, v in columns.items() if not np.isnan(v[-1])},
            )
            self._last_step = int(steps[-1])
        return ParsedBlock(steps, columns)

    def _steps(
        self,
        wandb_steps: np.ndarray,
        global_steps: np.ndarray | None,
        step_values: np.ndarray | None,
        peek: bool,
    ) -> np.ndarray:
        """Each row's step: train/global_step where the run logs it, else W&B's step
        (HistoryStep, else the `_step` item, else one after the row before)."""
        rows = wandb_steps.size
        wandb_steps = wandb_steps.copy()
        if step_values is not None and (wandb_steps < 0).any():
            usable = _integral(step_values)
            fill = (wandb_steps < 0) & usable
            wandb_steps[fill] = step_values[fill].astype(np.int64)
        if (wandb_steps < 0).any():  # neither: one after the row before
            previous = self._last_wandb_step
            for i in range(rows):
                if wandb_steps[i] < 0:
                    wandb_steps[i] = previous + 1
                previous = int(wandb_steps[i])
        uses_global = self._uses_global_step
        last_global = self._last_global_step
        steps = wandb_steps
        valid = _integral(global_steps) if global_steps is not None else None
        if global_steps is not None and valid is not None and valid.any():
            uses_global = True
            index = np.where(valid, np.arange(rows), -1)
            np.maximum.accumulate(index, out=index)
            steps = np.where(valid, global_steps, 0)[np.maximum(index, 0)].astype(np.int64)
            before = index < 0  # rows before the batch's first global step
            steps[before] = wandb_steps[before] if last_global is None else last_global
            last_global = int(global_steps[valid][-1])
        elif uses_global and last_global is not None:
            steps = np.full(rows, last_global, dtype=np.int64)
        if not peek:
            self._uses_global_step, self._last_global_step = uses_global, last_global
            self._last_wandb_step = int(wandb_steps[-1])
        return steps

    # -- run metadata -----------------------------------------------------------------------

    def _publish_info(self) -> None:
        """`info` from the records read so far (a new dict: readers may hold the old one)."""
        info = self._info_dict()
        if info != self.info or self._meta.problem != self.info_problem:
            self.info, self.info_problem = info, self._meta.problem
            self._info_version += 1

    def _info_dict(self) -> dict[str, Any]:
        meta = self._meta
        info: dict[str, Any] = {
            "name": meta.display_name or meta.run_id or self.default_name,
            "config": meta.config,
        }
        if self._header_ok is not False and not self._foreign:  # (not W&B's: says nothing)
            if meta.exit_code is None:
                info["status"] = "running"
            else:
                info["status"] = "finished" if meta.exit_code == 0 else "failed"
        if meta.created is not None:
            info["created"] = meta.created
        wandb_info: dict[str, Any] = {"run_id": meta.run_id, "project": meta.project}
        if self._resumes is not None:
            wandb_info["resumes"] = self._resumes
            info["name"] = f"{info['name']} (resumed)"
        elif meta.resumed:
            info["name"] = f"{info['name']} (resumed)"
        if meta.exit_code is not None:
            wandb_info["exit_code"] = meta.exit_code
        info["wandb"] = wandb_info
        return info

    def _scan_info(self) -> None:
        """Run, config and exit records from the start and the end of the file alone."""
        meta = _Meta()
        try:
            head = self._frame_window(0, INFO_HEAD_BYTES)
            tail = self._frame_window(-PEEK_BYTES)
        except OSError:
            return
        seen: set[int] = set()
        for offset, payload in [*head.records, *tail.records]:
            if offset in seen:
                continue
            seen.add(offset)
            with contextlib.suppress(_Damaged, IndexError):
                kind, a, b = _record_type(payload)
                if kind in (_RUN, _CONFIG, _EXIT):
                    _take_meta(meta, kind, payload, a, b)
        self._meta = meta
        self._publish_info()

    def _frame_window(self, start: int, size: int = PEEK_BYTES) -> _Framed:
        """The complete records of a window of the file (start < 0: from the end), framed
        from the block boundary at or before it; fragments cut by the window are dropped."""
        framed = _Framed()
        with open_regular(self.data_path, within=self.path) as f:
            file_size = os.fstat(f.fileno()).st_size
            if start < 0:
                start = max(0, file_size + start)
            begin = start - start % BLOCK_BYTES
            f.seek(begin)
            buf = f.read(min(size + start - begin, max(0, file_size - begin)))
        if begin == 0:
            if buf[: len(FILE_HEADER)] != FILE_HEADER:
                self._foreign = len(buf) >= len(FILE_HEADER)
                return framed
            pos = len(FILE_HEADER)
        else:
            pos = 0
        framer = _Framer()
        framer.dropping = True  # a block may begin with the end of an earlier record
        framer.frame(buf, begin, pos, framed)
        return framed
