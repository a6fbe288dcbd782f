"""monitor.sources.wandb: W&B `.wandb` run files, read incrementally without `wandb`.

Every run here is written by the real `wandb` package (0.31) in offline mode, in a
subprocess whose WANDB_DIR and config/cache directories are the test's tmp directory: no
network, nothing written outside tmp. What the reader must return is decided by an oracle
independent of it: a few lines of LevelDB-log framing and wandb's own protobuf classes
(`wandb.proto.wandb_internal_pb2`), which only the tests import — klwatch does not.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.run import load_run, open_run
from monitor.sources import FORMAT_LABELS, find_runs, locate_path, open_source
from monitor.sources.base import MAX_PROBLEMS_PER_READ, RunLocation, SourceRead
from monitor.sources.wandb import BLOCK_BYTES, FILE_HEADER, WandbSource
from monitor.table import SeriesTable

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")

REPO = Path(__file__).resolve().parent.parent
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
INTERNAL = ("_step", "_runtime", "_timestamp")
REFERENCE_STEPS = 400


# -- writing real runs -------------------------------------------------------------------------


def wandb_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(root),
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(root / ".wandb-config"),
        WANDB_CACHE_DIR=str(root / ".wandb-cache"),
        WANDB_DATA_DIR=str(root / ".wandb-data"),
        WANDB_CONSOLE="off",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
    )
    return env


def start_writer(root: Path, body: str, name: str = "writer.py") -> subprocess.Popen[bytes]:
    """A Python process running `body` (with json, math, sys, time and wandb imported)."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / name
    script.write_text("import json, math, sys, time\nimport wandb\n" + textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=root,
        env=wandb_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def write_run(root: Path, body: str, *, timeout: float = 120, check: bool = True) -> None:
    process = start_writer(root, body)
    _, err = process.communicate(timeout=timeout)
    if check and process.returncode != 0:
        raise AssertionError(f"the wandb writer failed:\n{err.decode(errors='replace')}")


def run_dirs(root: Path) -> list[Path]:
    """The run directories wandb made under root/wandb (not the latest-run link)."""
    return sorted(
        p
        for p in (root / "wandb").iterdir()
        if p.is_dir() and not p.is_symlink() and "run-" in p.name
    )


def data_file(run_dir: Path) -> Path:
    (path,) = run_dir.glob("run-*.wandb")
    return path


# -- the oracle: framing by hand, records by wandb's own protobuf classes ----------------------


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    kind: int


def chunks(data: bytes) -> list[Chunk]:
    """Every chunk of a W&B file, asserting the format facts the reader relies on."""
    assert data[:7] == FILE_HEADER
    out = []
    pos = 7
    while pos + 7 <= len(data):
        left = BLOCK_BYTES - pos % BLOCK_BYTES
        if left < 7:
            assert data[pos : pos + left] == bytes(left), "a block's trailer is zeros"
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if (crc, length, kind) == (0, 0, 0):
            break
        assert kind in (FULL, FIRST, MIDDLE, LAST)
        assert length <= left - 7, "a chunk never crosses its block"
        payload = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + payload) == crc, "CRC-32 (zlib) of type + payload"
        out.append(Chunk(pos, pos + 7 + length, kind))
        pos += 7 + length
    return out


def oracle_records(data: bytes) -> list[tuple[int, Any]]:
    """(file offset where the record's last chunk ends, Record) for every complete record."""
    records, parts = [], []
    for chunk in chunks(data):
        if chunk.kind in (FULL, FIRST):
            parts = []
        parts.append(data[chunk.start + 7 : chunk.end])
        if chunk.kind in (FULL, LAST):
            records.append((chunk.end, pb.Record.FromString(b"".join(parts))))
    return records


def oracle_rows(records: list[tuple[int, Any]], cut: int | None = None) -> list[dict[str, float]]:
    """The history rows of the records complete before `cut`: step and numeric values as
    wandb logged them (the `_step` run: one row per record)."""
    rows = []
    for end, record in records:
        if record.WhichOneof("record_type") != "history" or (cut is not None and end > cut):
            continue
        row: dict[str, float] = {"step": float(record.history.step.num)}
        for item in record.history.item:
            name = item.key or ".".join(item.nested_key)
            if name in INTERNAL:
                continue
            value = json.loads(item.value_json)
            if value is None:
                row[name] = math.nan
            elif isinstance(value, int | float) and not isinstance(value, bool):
                row[name] = float(value)
        rows.append(row)
    return rows


# -- reading -----------------------------------------------------------------------------------


def source_for(run_dir: Path) -> WandbSource:
    source = open_source(RunLocation("wandb", run_dir))
    assert isinstance(source, WandbSource)
    return source


def apply(table: SeriesTable, read: SourceRead) -> None:
    if read.reset:
        table.clear()
    for block in read.blocks:
        table.append(block)


def assert_table_is(table: SeriesTable, rows: list[dict[str, float]]) -> None:
    """The table holds exactly `rows` (NaN where a row lacks a name)."""
    steps = [int(r["step"]) for r in rows]
    np.testing.assert_array_equal(table.steps, steps)
    names = {name for r in rows for name in r if name != "step"}
    assert set(table.names) - {"time"} <= names
    for name in names:
        expected = [r.get(name, math.nan) for r in rows]
        np.testing.assert_array_equal(table.column(name), expected, err_msg=name)


# -- the reference run -------------------------------------------------------------------------

REFERENCE = f"""
run = wandb.init(
    mode="offline",
    project="klwatch-test",
    name="ref-run",
    config={{"beta": 0.04, "learning_rate": 1e-5, "model": {{"layers": 2}}, "notes": "x" * 40000}},
)
logged = []
for i in range({REFERENCE_STEPS}):
    row = {{"train/kl": 0.01 * i, "train/reward": math.sin(i), "loss": 1.0 / (i + 1), "count": i}}
    if i % 37 == 5:
        row["train/kl"] = float("nan")
    if i % 53 == 7:
        row["loss"] = float("inf")
    if i % 61 == 9:
        row["loss"] = float("-inf")
    if i % 10 == 0:
        row["text"] = "hello"  # not a series
    if i % 25 == 0:
        row["nested"] = {{"a": i, "b": 0.5}}  # W&B shows it as nested.a, nested.b
    if i == 150:
        row["note"] = "y" * 70000  # a record over three blocks: FIRST, MIDDLE, LAST
    wandb.log(row)
    logged.append({{k: v for k, v in row.items() if k not in ("text", "note")}})
run.config.update({{"extra": 1}})
run.finish()
json.dump(logged, open("logged.json", "w"))
"""


@dataclass
class Reference:
    root: Path
    run_dir: Path
    data: bytes
    records: list[tuple[int, Any]]
    logged: list[dict[str, Any]]

    @property
    def rows(self) -> list[dict[str, float]]:
        return oracle_rows(self.records)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    root = tmp_path_factory.mktemp("wandb-reference")
    write_run(root, REFERENCE)
    (run_dir,) = run_dirs(root)
    data = data_file(run_dir).read_bytes()
    logged = json.loads((root / "logged.json").read_text())
    return Reference(root, run_dir, data, oracle_records(data), logged)


def expected_from_logged(logged: list[dict[str, Any]]) -> list[dict[str, float]]:
    rows = []
    for step, row in enumerate(logged):
        flat: dict[str, float] = {"step": float(step)}
        for name, value in row.items():
            if isinstance(value, dict):
                flat.update({f"{name}.{k}": float(v) for k, v in value.items()})
            else:
                flat[name] = float(value)
        rows.append(flat)
    return rows


def test_format_facts_hold_for_what_wandb_writes(reference: Reference) -> None:
    """The facts the reader rests on, checked on the file wandb 0.31 wrote (chunks()
    asserts header, unmasked zlib CRC-32 over type + payload, blocks, zero trailers)."""
    found = chunks(reference.data)
    kinds = {c.kind for c in found}
    assert kinds == {FULL, FIRST, MIDDLE, LAST}  # the reference exercises every chunk type
    assert all(c.start // BLOCK_BYTES == (c.end - 1) // BLOCK_BYTES for c in found)
    types = [r.WhichOneof("record_type") for _, r in reference.records]
    assert {"run", "history", "config", "exit"} <= set(types)
    assert types.count("history") == REFERENCE_STEPS
    # wandb-core writes every history item with nested_key (the Python writer used key): one
    # element per name, two for a logged dict's entry ("nested" → "a")
    first = next(r for _, r in reference.records if r.WhichOneof("record_type") == "history")
    paths = {tuple(i.nested_key) for i in first.history.item if not i.key}
    assert len(paths) == len(first.history.item)
    assert ("train/kl",) in paths and ("nested", "a") in paths


def test_reads_what_wandb_logged(reference: Reference) -> None:
    (location,) = find_runs(reference.root / "wandb")  # latest-run is not a second run
    assert location == RunLocation("wandb", reference.run_dir)
    source = source_for(location.path)
    read = source.read()
    assert not read.problems and read.skipped == 0 and read.reset is None
    table = SeriesTable()
    apply(table, read)
    expected = expected_from_logged(reference.logged)
    assert_table_is(table, expected)
    assert_table_is(table, reference.rows)  # and what the oracle decodes
    assert np.isnan(table.column("train/kl")[5]) and table.column("loss")[7] == math.inf
    assert table.column("loss")[9] == -math.inf
    times = table.column("time")
    assert np.all(np.isfinite(times)) and np.all(np.diff(times) >= 0)
    assert abs(times[-1] - time.time()) < 3600
    assert not {"text", "note", *INTERNAL} & set(table.names)
    source.refresh_info()
    info = source.info
    assert info["name"] == "ref-run" and info["status"] == "finished"
    config = info["config"]
    assert config["beta"] == 0.04 and config["model"] == {"layers": 2} and config["extra"] == 1
    assert len(config["notes"]) == 40000 and "_wandb" not in config
    assert info["wandb"]["project"] == "klwatch-test" and "resumes" not in info["wandb"]
    assert source.read().blocks == []  # nothing new: nothing read


def test_cut_at_every_kind_of_byte_boundary(reference: Reference, tmp_path: Path) -> None:
    """A prefix of the file reads as exactly the records complete in it, never as damage;
    the rest, once written, reads as the rest. Cuts: inside the file header, at and inside
    every part of a chunk (its CRC, length, type, payload), around every block boundary, and
    at every chunk of the records that span blocks."""
    data, records = reference.data, reference.records
    found = chunks(data)
    cuts = set(range(0, 9))
    for block_start in range(BLOCK_BYTES, len(data), BLOCK_BYTES):
        cuts.update(range(block_start - 8, block_start + 9))
    multi = [c for c in found if c.kind != FULL]
    for chunk in [*found[:20], *multi, *found[-12:], *found[100::60]]:
        size = chunk.end - chunk.start
        # in its CRC, at its length, at its type, at and in its payload, before its end
        cuts.update(chunk.start + k for k in (0, 2, 4, 6, 7, 8, size // 2, size - 1))
        cuts.add(chunk.end)
    cuts = {c for c in cuts if 0 <= c <= len(data)}
    run_dir = tmp_path / "wandb" / reference.run_dir.name
    run_dir.mkdir(parents=True)
    path = run_dir / data_file(reference.run_dir).name
    full = reference.rows
    for cut in sorted(cuts):
        path.write_bytes(data[:cut])
        source = source_for(run_dir)
        table = SeriesTable()
        read = source.read()
        assert not read.problems and read.skipped == 0, (cut, read.problems)
        apply(table, read)
        assert_table_is(table, oracle_rows(records, cut))
        with open(path, "ab") as f:  # the writer goes on: same file, more bytes
            f.write(data[cut:])
        read = source.read()
        assert not read.problems and read.reset is None, (cut, read.problems)
        apply(table, read)
        assert_table_is(table, full)
        assert source.info["status"] == "finished"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_any_growth_reads_like_one_shot(reference: Reference, fractions: list[float]) -> None:
    """The file growing in arbitrary pieces reads, after each piece, as the complete records
    so far, and in the end as the whole file read at once."""
    data, records = reference.data, reference.records
    cuts = sorted({int(f * len(data)) for f in fractions} | {len(data)})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / reference.run_dir.name
        run_dir.mkdir()
        path = run_dir / data_file(reference.run_dir).name
        path.touch()
        source = source_for(run_dir)
        table = SeriesTable()
        written = 0
        for cut in cuts:
            with open(path, "ab") as f:
                f.write(data[written:cut])
            written = cut
            read = source.read()
            assert not read.problems
            apply(table, read)
            assert_table_is(table, oracle_rows(records, cut))
        assert_table_is(table, reference.rows)


# -- damage ------------------------------------------------------------------------------------


def history_chunk(reference: Reference, step: int) -> Chunk:
    """The (only) chunk of the FULL history record of `step`."""
    for chunk in chunks(reference.data):
        if chunk.kind != FULL:
            continue
        record = pb.Record.FromString(reference.data[chunk.start + 7 : chunk.end])
        if record.WhichOneof("record_type") == "history" and record.history.step.num == step:
            return chunk
    raise AssertionError(f"no FULL history record for step {step}")


def record_at(reference: Reference, chunk: Chunk) -> Any:
    """The record a chunk belongs to."""
    return next(r for end, r in reference.records if end >= chunk.end)


def read_damaged(
    reference: Reference, tmp_path: Path, data: bytes
) -> tuple[SourceRead, SeriesTable]:
    run_dir = tmp_path / reference.run_dir.name
    run_dir.mkdir(exist_ok=True)
    (run_dir / data_file(reference.run_dir).name).write_bytes(data)
    read = source_for(run_dir).read()
    table = SeriesTable()
    apply(table, read)
    return read, table


def without_steps(rows: list[dict[str, float]], steps: set[int]) -> list[dict[str, float]]:
    return [r for r in rows if int(r["step"]) not in steps]


@pytest.mark.parametrize("where", ["payload", "crc", "type"])
def test_bad_crc_skips_that_record_only(reference: Reference, tmp_path: Path, where: str) -> None:
    chunk = history_chunk(reference, 200)
    at = {"payload": chunk.start + 7 + 20, "crc": chunk.start + 1, "type": chunk.start + 6}[where]
    data = bytearray(reference.data)
    data[at] ^= 0x40 if where != "type" else 0x03  # FULL (1) → LAST (2^1=... 3^1=2) etc.
    read, table = read_damaged(reference, tmp_path, bytes(data))
    assert read.skipped == 1 and len(read.problems) == 1, read.problems
    assert f"byte {chunk.start}" in read.problems[0].reason
    assert "CRC" in read.problems[0].reason or "fragment" in read.problems[0].reason
    assert_table_is(table, without_steps(reference.rows, {200}))


def test_bad_crc_in_a_record_across_blocks_skips_the_record(
    reference: Reference, tmp_path: Path
) -> None:
    middle = next(
        c
        for c in chunks(reference.data)
        if c.kind == MIDDLE and record_at(reference, c).WhichOneof("record_type") == "history"
    )
    data = bytearray(reference.data)
    data[middle.start + 100] ^= 0xFF
    read, table = read_damaged(reference, tmp_path, bytes(data))
    assert read.skipped == 1 and "bad CRC" in read.problems[0].reason
    lost = {150}  # the row that logged 70,000 characters
    assert_table_is(table, without_steps(reference.rows, lost))


def test_bad_length_loses_the_rest_of_that_block(reference: Reference, tmp_path: Path) -> None:
    chunk = history_chunk(reference, 120)
    data = bytearray(reference.data)
    struct.pack_into("<H", data, chunk.start + 4, 60000)  # past its block: cannot be right
    read, table = read_damaged(reference, tmp_path, bytes(data))
    assert read.skipped == 1 and "rest of the block" in read.problems[0].reason
    block_end = (chunk.start // BLOCK_BYTES + 1) * BLOCK_BYTES
    lost = {
        int(r.history.step.num)
        for end, r in reference.records
        if chunk.start < end <= block_end and r.WhichOneof("record_type") == "history"
    }
    lost |= {120}
    # a record that began in the lost block and ends in the next one is lost too
    survivors = [r for r in reference.rows if int(r["step"]) not in lost]
    assert len(survivors) > REFERENCE_STEPS - 40
    steps = set(table.steps.tolist())
    assert steps <= {int(r["step"]) for r in survivors}
    assert max(steps) == REFERENCE_STEPS - 1 and 119 in steps


def test_a_file_truncated_or_replaced_is_read_again(reference: Reference, tmp_path: Path) -> None:
    run_dir = tmp_path / reference.run_dir.name
    run_dir.mkdir()
    path = run_dir / data_file(reference.run_dir).name
    path.write_bytes(reference.data)
    source = source_for(run_dir)
    table = SeriesTable()
    apply(table, source.read())
    half = chunks(reference.data)[len(chunks(reference.data)) // 2].end
    with open(path, "r+b") as f:  # the same file, shorter
        f.truncate(half)
    read = source.read()
    assert read.reset is not None and "truncated" in read.reset
    apply(table, read)
    assert_table_is(table, oracle_rows(reference.records, half))
    replacement = tmp_path / "new.wandb"
    replacement.write_bytes(reference.data)
    os.replace(replacement, path)  # another file under the name
    read = source.read()
    assert read.reset is not None and "replaced" in read.reset
    apply(table, read)
    assert_table_is(table, reference.rows)


def test_not_a_wandb_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "wandb" / "run-20250101_000000-abc"
    run_dir.mkdir(parents=True)
    (run_dir / "run-abc.wandb").write_bytes(b"SQLite format 3\x00" + bytes(100))
    (location,) = find_runs(tmp_path)
    source = open_source(location)
    read = source.read()
    assert read.skipped == 1 and "no W&B header" in read.problems[0].reason
    assert source.read().problems == []  # said once
    assert "status" not in source.info


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 70_000), st.integers(0, 255), st.sampled_from(["set", "cut", "insert"])
        ),
        min_size=1,
        max_size=6,
    )
)
def test_hostile_bytes_never_crash_or_hang(
    reference: Reference, edits: list[tuple[int, int, str]]
) -> None:
    """Any damage to a real file: read() returns (problems capped, time bounded) and never
    raises; what it reads after is still rows."""
    data = bytearray(reference.data[: 72 * 1024])
    for at, byte, how in edits:
        at = min(at, len(data))
        if how == "set" and at < len(data):
            data[at] = byte
        elif how == "cut":
            del data[at : at + byte]
        else:
            data[at:at] = bytes([byte]) * (byte % 9 + 1)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run-20250101_000000-fuzz"
        run_dir.mkdir()
        (run_dir / "run-fuzz.wandb").write_bytes(bytes(data))
        source = source_for(run_dir)
        started = time.monotonic()
        read = source.read()
        assert time.monotonic() - started < 5
        assert len(read.problems) <= MAX_PROBLEMS_PER_READ
        for block in read.blocks:
            assert block.steps.dtype == np.int64 and np.all(block.steps >= 0)
            assert all(v.shape == block.steps.shape for v in block.columns.values())
        source.refresh_info()
        source.peek_last_step()


def test_garbage_after_a_valid_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    run_dir = tmp_path / "run-20250101_000000-junk"
    run_dir.mkdir()
    (run_dir / "run-junk.wandb").write_bytes(FILE_HEADER + rng.bytes(200_000))
    read = source_for(run_dir).read()
    assert read.blocks == [] and 0 < len(read.problems) <= MAX_PROBLEMS_PER_READ


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def frame_records(payloads: list[bytes]) -> bytes:
    """A W&B file holding `payloads`, framed as LevelDB's log writer does (for encodings
    wandb 0.31 itself does not write)."""
    out = bytearray(FILE_HEADER)
    for payload in payloads:
        first = True
        while True:
            left = BLOCK_BYTES - len(out) % BLOCK_BYTES
            if left < 7:
                out += bytes(left)
                continue
            piece, payload = payload[: left - 7], payload[left - 7 :]
            kind = (FULL if not payload else FIRST) if first else (LAST if not payload else MIDDLE)
            crc = zlib.crc32(bytes([kind]) + piece)
            out += struct.pack("<IHB", crc, len(piece), kind) + piece
            first = False
            if not payload:
                break
    return bytes(out)


def test_other_encodings_of_history_items(tmp_path: Path) -> None:
    """What wandb-core does not write but the format allows, through the general decoder:
    the Python writer's `key` (wandb < 0.18), nested keys, the integer (sint64) and number
    (double) fields, lengths of two bytes (one of them 130: `82 01`, the value tag's bytes),
    items after the step, and a record with no items."""
    records = []
    for step in range(6):
        record = pb.Record(num=step + 1)
        history = record.history
        history.item.add(key="train/kl", value_json=json.dumps(step / 10))
        history.item.add(nested_key=["actor", "kl_loss"], value_json=json.dumps(step))
        history.item.add(key="count", integer=-step)
        history.item.add(key="ratio", number=math.inf if step == 2 else step / 4)
        history.item.add(key="x" * 130, value_json="1")  # a key of 130 bytes
        history.item.add(key="text", value_json=json.dumps("y" * 127))  # a value of 129 bytes
        history.item.add(key="_step", value_json=str(step))
        if step == 4:  # the step before the items (protobuf allows any field order)
            items = history.SerializeToString()
            hist = bytes([0x12, 0x02, 0x08, step]) + items
            records.append(bytes([0x08, step + 1, 0x12]) + _varint(len(hist)) + hist)
            continue
        history.step.num = step
        records.append(record.SerializeToString())
    records.append(pb.Record(num=99, history=pb.HistoryRecord()).SerializeToString())
    run_dir = tmp_path / "run-20250101_000000-enc"
    run_dir.mkdir()
    (run_dir / "run-enc.wandb").write_bytes(frame_records(records))
    read = source_for(run_dir).read()
    assert not read.problems
    table = SeriesTable()
    apply(table, read)
    np.testing.assert_array_equal(table.steps, np.arange(6))
    np.testing.assert_allclose(table.column("train/kl"), np.arange(6) / 10)
    np.testing.assert_array_equal(table.column("actor.kl_loss"), np.arange(6))
    np.testing.assert_array_equal(table.column("count"), -np.arange(6))
    np.testing.assert_array_equal(table.column("ratio"), [0, 0.25, math.inf, 0.75, 1, 1.25])
    np.testing.assert_array_equal(table.column("x" * 130), np.ones(6))
    assert "text" not in table.names


# -- live runs, status, resume, names ----------------------------------------------------------

LIVE_STEPS = 4000
LIVE = f"""
run = wandb.init(mode="offline", project="klwatch-test", name="live", config={{"beta": 0.1}})
print("started", flush=True)
for i in range({LIVE_STEPS}):
    row = {{f"m{{j:02d}}": i + j / 100 for j in range(30)}}
    row["train/kl"] = math.nan if i % 97 == 3 else i / 1000
    wandb.log(row)
    if i % 20 == 0:
        time.sleep(0.02)
run.finish()
"""


def test_run_read_while_wandb_writes_it(tmp_path: Path) -> None:
    """wandb-core writes whole 32 KiB blocks while a run is live: a Run refreshed while the
    writer runs sees the rows grow (never a problem, never a reset), says "running", and ends
    with every logged row, "finished"."""
    process = start_writer(tmp_path, LIVE)
    seen: list[tuple[int, str]] = []
    run = None
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if run is None:
                found = list(find_runs(tmp_path / "wandb")) if (tmp_path / "wandb").exists() else []
                run = open_run(found[0]) if found else None
            if run is not None:
                run.refresh()
                seen.append((run.table.n, str(run.info.get("status"))))
            time.sleep(0.05)
        process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""
    assert run is not None
    run.refresh()
    counts = [n for n, _ in seen]
    assert counts == sorted(counts)  # rows only ever grow
    partial = {n for n in counts if 0 < n < LIVE_STEPS}
    assert len(partial) >= 2, counts  # growth was seen while wandb wrote
    assert all(status == "running" for n, status in seen if 0 < n < LIVE_STEPS)
    assert run.table.n == LIVE_STEPS and run.info["status"] == "finished"
    assert run.skipped == 0 and not run.problems
    # the same as one read of the finished file
    once = SeriesTable()
    apply(once, source_for(run.path).read())
    np.testing.assert_array_equal(run.table.steps, np.arange(LIVE_STEPS))
    for name in once.names:
        np.testing.assert_array_equal(run.table.column(name), once.column(name), err_msg=name)
    kl = run.table.column("train/kl")
    expected = [math.nan if i % 97 == 3 else i / 1000 for i in range(LIVE_STEPS)]
    np.testing.assert_array_equal(kl, expected)


def test_exit_record_says_finished_or_failed(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        """
        run = wandb.init(mode="offline", project="p", id="crashes")
        wandb.log({"train/kl": 0.5})
        raise ValueError("the trainer died")
    """,
        check=False,
    )
    (run_dir,) = run_dirs(tmp_path)
    source = source_for(run_dir)
    source.read()
    assert source.info["status"] == "failed" and source.info["wandb"]["exit_code"] == 1
    # before the exit record is written, the run is running
    data = data_file(run_dir).read_bytes()
    exit_end = next(end for end, r in oracle_records(data) if r.WhichOneof("record_type") == "exit")
    exit_start = max(c.start for c in chunks(data) if c.end <= exit_end)
    live = tmp_path / "live" / run_dir.name
    live.mkdir(parents=True)
    (live / data_file(run_dir).name).write_bytes(data[:exit_start])
    prefix = source_for(live)
    prefix.read()
    assert prefix.info["status"] == "running"


def test_resumed_run_is_a_second_run_with_the_same_name(tmp_path: Path) -> None:
    """wandb.init(id=…, resume="allow") again makes a new directory with the same id: two
    runs (the second says it resumed), not one merged run."""
    body = """
        run = wandb.init(mode="offline", project="p", id="same-id", name="grpo", resume="allow")
        for i in range({start}, {stop}):
            wandb.log({{"train/kl": i / 100, "train/global_step": i}})
        run.finish()
    """
    write_run(tmp_path, body.format(start=0, stop=30))
    time.sleep(1.1)  # wandb names run directories by the second
    write_run(tmp_path, body.format(start=20, stop=50))
    first, second = run_dirs(tmp_path)
    locations = sorted(find_runs(tmp_path / "wandb"))  # latest-run → second: not a third
    assert [loc.path for loc in locations] == [first, second]
    runs = [load_run(loc) for loc in locations]
    assert [r.info["name"] for r in runs] == ["grpo", "grpo (resumed)"]
    assert "resumes" not in runs[0].info["wandb"]
    assert runs[1].info["wandb"]["resumes"] == first.name
    np.testing.assert_array_equal(runs[0].table.steps, np.arange(0, 30))
    np.testing.assert_array_equal(runs[1].table.steps, np.arange(20, 50))
    np.testing.assert_allclose(runs[1].table.column("train/kl"), np.arange(20, 50) / 100)


GLOBAL_STEP = """
run = wandb.init(mode="offline", project="p", name="hf-style")
for step in range(1, 41):
    # transformers' WandbCallback: no step=, the Trainer's step as train/global_step
    wandb.log({"train/kl": step / 100, "train/loss": 1 / step, "train/global_step": step})
    if step % 10 == 0:
        wandb.log({"eval/kl": step / 50, "train/global_step": step})
    wandb.log({"profiling/seconds": 0.5})  # TRL's profiling rows carry no global step
wandb.log({"train/train_runtime": 12.5, "train/global_step": 40})
run.finish()
"""


def test_global_step_is_the_step_and_rows_of_one_step_merge(tmp_path: Path) -> None:
    write_run(tmp_path, GLOBAL_STEP)
    (run_dir,) = run_dirs(tmp_path)
    data = data_file(run_dir).read_bytes()
    full = SeriesTable()
    apply(full, source_for(run_dir).read())
    np.testing.assert_array_equal(full.steps, np.arange(1, 41))
    np.testing.assert_allclose(full.column("train/kl"), np.arange(1, 41) / 100)
    eval_kl = full.column("eval/kl")
    assert np.isnan(eval_kl[:9]).all() and eval_kl[9] == 0.2 and eval_kl[39] == 0.8
    assert full.column("profiling/seconds")[0] == 0.5  # merged into the step it followed
    assert full.column("train/train_runtime")[-1] == 12.5
    # read in two pieces cut between the rows of one step: the same table in the end
    for cut_record in (25, 50, 80):  # (85 history records)
        end = [e for e, r in oracle_records(data) if r.WhichOneof("record_type") == "history"][
            cut_record
        ]
        live = tmp_path / f"cut{cut_record}" / run_dir.name
        live.mkdir(parents=True)
        path = live / data_file(run_dir).name
        path.write_bytes(data[:end])
        source = source_for(live)
        table = SeriesTable()
        apply(table, source.read())
        with open(path, "ab") as f:
            f.write(data[end:])
        apply(table, source.read())
        np.testing.assert_array_equal(table.steps, full.steps)
        for name in full.names:
            np.testing.assert_array_equal(table.column(name), full.column(name), err_msg=name)


def test_probe_knows_name_status_config_and_last_step_without_reading(
    reference: Reference,
) -> None:
    """The sidebar's probe never reads the rows: the run record is at the start of the
    file, the exit record at its end."""
    source = source_for(reference.run_dir)
    assert source.refresh_info() is True
    assert source.info["name"] == "ref-run" and source.info["status"] == "finished"
    assert source.info["config"]["beta"] == 0.04
    assert source.refresh_info() is False
    assert source.peek_last_step() == REFERENCE_STEPS - 1
    assert source.last_write_time() == data_file(reference.run_dir).stat().st_mtime
    assert source.stamp() == source.stamp()


def test_latest_run_link_opens_the_run_it_points_to(reference: Reference) -> None:
    latest = reference.root / "wandb" / "latest-run"
    assert latest.is_symlink()
    assert locate_path(latest, recursive=False) == [RunLocation("wandb", reference.run_dir)]
    run = load_run(latest)
    assert run.path == reference.run_dir and run.table.n == REFERENCE_STEPS
    assert run.source.label == FORMAT_LABELS["wandb"] == "W&B"


def test_check_finds_the_run(reference: Reference) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(reference.root / "wandb"), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    runs = report["runs"] if isinstance(report, dict) else report
    assert len(runs) == 1
    assert runs[0]["name"] == "ref-run" and runs[0]["rows"] == REFERENCE_STEPS
    assert runs[0]["source"]["format"] == "wandb" and runs[0]["skipped"] == 0


# -- a real TRL run --------------------------------------------------------------------------

TRL_GRPO = """
from pathlib import Path
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer
from tools.tiny_trl import PROMPTS, build_tiny_model, reward_words

model = build_tiny_model(Path("tiny-model"))
args = GRPOConfig(
    output_dir="grpo", use_cpu=True, bf16=False, beta=0.04, max_steps=12, logging_steps=1,
    per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
    learning_rate=1e-2, report_to=["wandb"], run_name="tiny-grpo", save_strategy="no",
    disable_tqdm=True, seed=0,
)
trainer = GRPOTrainer(
    model=str(model), reward_funcs=reward_words, args=args,
    train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
    processing_class=AutoTokenizer.from_pretrained(model),
)
trainer.train()
json.dump(trainer.state.log_history, open("log_history.json", "w"))
"""


@pytest.mark.slow
def test_trl_grpo_logged_to_wandb_offline(tmp_path: Path) -> None:
    """The issue's case: TRL GRPO with report_to="wandb" (offline) is one run whose KL is
    what TRL logged, with β from its config and TRL's preset."""
    pytest.importorskip("trl")
    write_run(tmp_path, TRL_GRPO, timeout=300)
    (location,) = find_runs(tmp_path)
    assert location.format == "wandb"
    run = load_run(location)
    history = json.loads((tmp_path / "log_history.json").read_text())
    logged = {h["step"]: h["kl"] for h in history if "kl" in h}
    assert len(logged) == 12
    kl = dict(zip(run.table.steps.tolist(), run.table.column("train/kl").tolist(), strict=True))
    assert {step: kl[step] for step in logged} == pytest.approx(logged)
    assert run.info["name"] == "tiny-grpo" and run.info["status"] == "finished"
    assert run.meaning.preset == "trl_grpo" and run.meaning.beta == 0.04
    assert run.meaning.mapping["kl_mean"] == "train/kl"


def test_module_does_not_import_wandb() -> None:
    code = "import sys, monitor.sources.wandb; print('wandb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_the_page_says_a_live_wandb_run_lags_by_a_block(reference: Reference) -> None:
    """What the page says about the source includes W&B's block-wise writing."""
    from monitor.dashboard import views
    from monitor.dashboard.store import RunStore

    with RunStore([reference.run_dir.parent], watch=False) as store:
        (run_id,) = store.run_ids()
        view = store.view(run_id)
        assert view is not None
        assert any("32 KiB blocks" in line for line in views.source_lines(view))
