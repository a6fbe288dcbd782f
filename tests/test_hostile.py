"""Hostile files cost only themselves (issue 23, part 3).

Each hostile file sits in a root beside a healthy run. `check` (a subprocess, so a crash or
a hang is a failed test and not a dead test runner) must finish within seconds, report the
healthy run, report the damage, and never print a traceback. Nothing from outside the root
may be shown, and names reach the terminal with their control characters escaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import RunWriter, load_run
from monitor.dashboard.store import RunStore
from monitor.sources.klwatch import MAX_INFO_BYTES
from monitor.sources.parse import MAX_JSON_DEPTH, decode_line, json_depth, parse_pieces
from monitor.sources.rows import as_number, as_step, numbers
from monitor.sources.tail import FileTail, RefusedFile, open_regular
from monitor.text import printable, utf8_text

CHECK_TIMEOUT_S = 60  # generous for a loaded CI machine; a hang is still caught
SECRET = "SECRET-d41d8cd9"
DEEP = 20_000  # the 55 KB line: pyarrow's recursive parser segfaulted on it


# -- helpers ----------------------------------------------------------------------------------


def healthy(root: Path, steps: int = 30) -> Path:
    with RunWriter(root / "good", name="healthy") as writer:
        for step in range(steps):
            writer.log(step, kl_mean=0.02, kl_max=0.05, beta=0.1, reward_mean=0.5)
    return root / "good"


def bad_run(root: Path, lines: list[bytes] | None = None) -> Path:
    """A run directory whose metrics.jsonl holds `lines` (default: five good records)."""
    run = root / "bad"
    run.mkdir(parents=True, exist_ok=True)
    if lines is None:
        lines = [b'{"step": %d, "kl_mean": 0.02}' % s for s in range(5)]
    (run / "metrics.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return run


def check(*args: str | Path, text: bool = False) -> tuple[int, Any, str]:
    """`python -m monitor check ARGS [--json]`: (exit status, document or text, stderr)."""
    command = [sys.executable, "-m", "monitor", "check", *map(str, args)]
    if not text:
        command.append("--json")
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, timeout=CHECK_TIMEOUT_S, check=False)
    assert time.monotonic() - start < CHECK_TIMEOUT_S
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert done.returncode in (0, 1), (done.returncode, stderr)  # never 139, never a usage 2
    out = done.stdout.decode("utf-8")
    return done.returncode, (out if text else json.loads(out)), stderr


def runs_by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(r["path"]).name: r for r in document["runs"]}


def assert_healthy_reported(document: dict[str, Any]) -> dict[str, Any]:
    """The healthy run is in the report with all its rows; returns the bad run's report."""
    runs = runs_by_name(document)
    assert runs["good"]["rows"] == 30 and runs["good"]["name"] == "healthy"
    assert not [a for a in runs["good"]["alerts"] if a["rule"] == "records_unreadable"]
    return runs["bad"]


def damage_reported(rc: int, bad: dict[str, Any]) -> bool:
    unreadable = [a for a in bad["alerts"] if a["rule"] == "records_unreadable"]
    return bad["skipped"] > 0 and (rc != 0 or bool(unreadable))


def block_of(data: bytes) -> tuple[list[int], dict[str, list[float]], list[tuple[int, str]]]:
    """parse_pieces over `data`, as plain lists (one piece)."""
    (piece,) = list(parse_pieces(data))
    columns = {k: v.tolist() for k, v in piece.columns.items()}
    return piece.steps.tolist(), columns, piece.problems


# -- nesting ----------------------------------------------------------------------------------


NESTED_LINES = [
    b"[" * DEEP + b"]" * DEEP,  # a bare array: Python's json recursed out
    b'{"step": 3, "a": ' + b"[" * DEEP + b"]" * DEEP + b"}",  # pyarrow: segfault
    b'{"step": 3, "a": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",  # objects likewise
    b'{"step": 3, "a": ' + b"[0, " * DEEP + b"]" * DEEP + b"}",  # brackets interleaved
]


@pytest.mark.parametrize("line", NESTED_LINES, ids=["array", "in-object", "objects", "mixed"])
def test_a_deeply_nested_line_is_one_damaged_record(line: bytes) -> None:
    good = b'{"step": 0, "kl_mean": 0.1}\n'
    steps, columns, problems = block_of(good + line + b"\n" + good.replace(b"0,", b"5,"))
    assert steps == [0, 5] and columns == {"kl_mean": [0.1, 0.1]}
    assert problems == [(2, f"nested deeper than {MAX_JSON_DEPTH} levels: not parsed")]


def test_brackets_inside_strings_and_wide_arrays_are_not_depth() -> None:
    lines = [
        b'{"step": 0, "kl_mean": 0.1, "note": "' + b"[" * DEEP + b'"}',
        b'{"step": 1, "kl_mean": 0.2, "grid": [' + b",".join([b"[1, 2]"] * 3000) + b"]}",
        b'{"step": 2, "kl_mean": 0.3, "q": "\\"[[[", "a": [[[1]]]}',
    ]
    steps, columns, problems = block_of(b"\n".join(lines) + b"\n")
    assert steps == [0, 1, 2] and columns == {"kl_mean": [0.1, 0.2, 0.3]} and not problems


def test_a_nested_line_in_the_newest_records_costs_nothing_else(tmp_path: Path) -> None:
    """The peek of the last step and the samples reader go through the same depth check."""
    small = b'{"step": 2, "a": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # inside the peek's window
    run = bad_run(tmp_path, [NESTED_LINES[1], b'{"step": 7, "kl_mean": 0.1}', small])
    (run / "samples.jsonl").write_bytes(NESTED_LINES[0] + b"\n" + b'{"step": 7, "reward": 1}\n')
    loaded = load_run(run)
    assert loaded.source.peek_last_step() == 7
    assert [s["reward"] for s in loaded.samples()] == [1]


json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


def nesting(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_depth_is_the_nesting_of_valid_json(value: object) -> None:
    assert json_depth(json.dumps(value).encode()) == nesting(value)


def test_decode_line_refuses_before_parsing() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        decode_line(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert decode_line(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


def test_check_survives_a_nested_line(tmp_path: Path) -> None:
    healthy(tmp_path)
    bad_run(tmp_path, NESTED_LINES)
    rc, document, _ = check(tmp_path)
    bad = assert_healthy_reported(document)
    assert bad["skipped"] == len(NESTED_LINES) and bad["rows"] == 0
    assert rc == 1 and damage_reported(rc, bad)


# -- out-of-range numbers ---------------------------------------------------------------------


def test_numbers_beyond_int64_and_float_are_damaged_not_fatal() -> None:
    huge = b"1" + b"0" * 400
    lines = [
        b'{"step": 0, "kl_mean": 0.1}',
        b'{"step": %d, "kl_mean": 0.1}' % 2**63,  # step beyond int64: a damaged record
        b'{"step": 2, "kl_mean": ' + huge + b"}",  # beyond float: +Infinity, as pyarrow reads it
        b'{"step": 3, "kl_mean": -' + huge + b"}",
        b"not json",  # sends the piece to the line-by-line path
    ]
    steps, columns, problems = block_of(b"\n".join(lines) + b"\n")
    assert steps == [0, 2, 3] and columns == {"kl_mean": [0.1, np.inf, -np.inf]}
    assert [line for line, _ in problems] == [2, 5]
    assert "out of range" in problems[0][1]
    # The fast path (no bad line in the piece) reads the same values.
    fast_steps, fast_columns, fast_problems = block_of(b"\n".join(lines[2:4]) + b"\n")
    assert fast_steps == [2, 3] and fast_columns == {"kl_mean": [np.inf, -np.inf]}
    assert not fast_problems


def test_row_sources_read_out_of_range_numbers_without_overflow() -> None:
    assert as_step(2**63) is None and as_step(2**63 - 1) == 2**63 - 1 and as_step(1e19) is None
    assert as_number(10**400) == np.inf and as_number(-(10**400)) == -np.inf
    assert numbers({"a": 10**400, "b": 3}) == {"a": np.inf, "b": 3.0}


def test_check_survives_out_of_range_numbers(tmp_path: Path) -> None:
    healthy(tmp_path)
    huge = b"1" + b"0" * 400
    bad_run(
        tmp_path,
        [b'{"step": %d, "kl_mean": 0.1}' % 2**63, b'{"step": 1, "kl_mean": ' + huge + b"}", b"x"],
    )
    rc, document, _ = check(tmp_path)
    bad = assert_healthy_reported(document)
    assert bad["skipped"] == 2 and bad["rows"] == 1 and damage_reported(rc, bad)


# -- FIFOs, devices, symlinks out of the root, sizes ----------------------------------------


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RefusedFile, match="not a regular file \\(a FIFO\\)"):
        open_regular(fifo)
    with pytest.raises(RefusedFile, match="a device"):
        open_regular("/dev/zero")


def test_check_survives_a_fifo_named_run_json(tmp_path: Path) -> None:
    healthy(tmp_path)
    run = bad_run(tmp_path)
    os.mkfifo(run / "run.json")
    _rc, document, _ = check(tmp_path)
    assert_healthy_reported(document)
    loaded = load_run(run)  # in this process too: never blocks
    assert loaded.n_rows == 5 and loaded.info == {}
    assert loaded.info_problem is not None and "FIFO" in loaded.info_problem
    assert any("run.json" in str(p) and "FIFO" in str(p) for p in loaded.problems)


def test_check_survives_a_fifo_named_metrics_jsonl(tmp_path: Path) -> None:
    healthy(tmp_path)
    run = tmp_path / "bad"
    run.mkdir()
    os.mkfifo(run / "metrics.jsonl")
    rc, document, _ = check(tmp_path)
    bad = runs_by_name(document)["bad"]
    assert_healthy_reported(document)
    (unreadable,) = [a for a in bad["alerts"] if a["rule"] == "records_unreadable"]
    assert "not a regular file (a FIFO)" in unreadable["message"] and rc == 1


def test_samples_that_are_a_fifo_or_a_device_are_refused_and_reported(tmp_path: Path) -> None:
    run = bad_run(tmp_path)
    os.mkfifo(run / "samples.jsonl")
    loaded = load_run(run)
    assert loaded.samples() == []
    assert loaded.info_problem is not None and "samples.jsonl: not a regular file (a FIFO)" in (
        loaded.info_problem
    )
    (run / "samples.jsonl").unlink()
    (run / "samples.jsonl").symlink_to("/dev/zero")
    loaded = load_run(run)
    assert loaded.samples() == []  # not read without bound
    assert loaded.info_problem is not None and "samples.jsonl" in loaded.info_problem


def test_metrics_jsonl_that_is_a_device_is_a_read_error(tmp_path: Path) -> None:
    run = tmp_path / "bad"
    run.mkdir()
    (run / "metrics.jsonl").symlink_to("/dev/zero")
    with pytest.raises(RefusedFile, match="a device"):
        FileTail(run / "metrics.jsonl").read()


def secret_links(root: Path, outside: Path) -> Path:
    """A run whose run.json and samples.jsonl are symlinks to files outside the root."""
    outside.mkdir()
    (outside / "info.json").write_text(json.dumps({"name": SECRET, "config": {"key": SECRET}}))
    (outside / "samples.jsonl").write_text(json.dumps({"step": 1, "response": SECRET}) + "\n")
    run = bad_run(root)
    (run / "run.json").symlink_to(outside / "info.json")
    (run / "samples.jsonl").symlink_to(outside / "samples.jsonl")
    return run


def test_symlinks_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    healthy(root)
    run = secret_links(root, tmp_path / "outside")
    _rc, document, _ = check(root)
    assert SECRET not in json.dumps(document)
    assert runs_by_name(document)["bad"]["name"] == "bad"
    assert_healthy_reported(document)
    _rc, text, _ = check(root, text=True)
    assert SECRET not in text
    loaded = load_run(run)
    assert loaded.info == {} and loaded.samples() == []
    assert loaded.info_problem is not None and "symbolic link" in loaded.info_problem
    assert "run.json: cannot read (a symbolic link out of the run directory" in (
        loaded.info_problem
    )
    assert "samples.jsonl: a symbolic link out of the run directory" in loaded.info_problem
    assert SECRET not in repr(loaded.info) + repr(loaded.problems)
    store = RunStore([root], watch=False)  # the page's path: its Config tab shows run.info
    try:
        entry = store.get("root/bad")
        assert entry is not None and entry.run is not None
        assert SECRET not in repr(entry.run.info) + repr(entry.run.samples())
    finally:
        store.close()


def test_a_symlink_inside_the_run_directory_is_followed(tmp_path: Path) -> None:
    run = bad_run(tmp_path)
    (run / "real.json").write_text(json.dumps({"name": "linked"}))
    (run / "run.json").symlink_to("real.json")
    assert load_run(run).name == "linked"


def test_run_json_linked_to_dev_zero_or_too_large_is_not_read(tmp_path: Path) -> None:
    healthy(tmp_path)
    run = bad_run(tmp_path)
    (run / "run.json").symlink_to("/dev/zero")
    _rc, document, _ = check(tmp_path)
    assert_healthy_reported(document)
    assert load_run(run).info_problem is not None
    (run / "run.json").unlink()
    (run / "run.json").write_bytes(b'{"name": "' + b"x" * MAX_INFO_BYTES + b'"}')
    loaded = load_run(run)
    assert loaded.info == {} and loaded.n_rows == 5
    assert loaded.info_problem is not None and "larger than 1 MiB" in loaded.info_problem


def test_a_large_samples_file_is_read_only_at_its_end(tmp_path: Path) -> None:
    run = bad_run(tmp_path)
    line = json.dumps({"step": 0, "response": "x" * 1000}) + "\n"
    with open(run / "samples.jsonl", "w") as f:
        f.write(line * 20_000)  # 20 MB
        f.write(json.dumps({"step": 9, "response": "last"}) + "\n")
    start = time.monotonic()
    samples = load_run(run).samples(limit=3)
    assert samples[-1]["response"] == "last" and time.monotonic() - start < 5


# -- terminal escapes -------------------------------------------------------------------------

EVIL_NAME = "evil\x1b[2J\x1b]0;pwned\x07\rname\nforged line\x9b31m"
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x9b")


def test_printable_escapes_control_characters() -> None:
    assert printable("plain name ü ✓") == "plain name ü ✓"
    assert printable(EVIL_NAME) == ("evil\\x1b[2J\\x1b]0;pwned\\x07\\rname\\nforged line\\x9b31m")
    assert printable("rtl\u202eoverride\ud800") == "rtl\\u202eoverride\\ud800"


def test_check_and_watch_escape_run_names(tmp_path: Path) -> None:
    healthy(tmp_path)
    with RunWriter(tmp_path / "bad", name=EVIL_NAME) as writer:
        for step in range(30):
            writer.log(step, kl_mean=float("nan"))  # an alert, so watch prints a line
    _rc, text, _ = check(tmp_path, text=True)
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\rname\\nforged line" in text
    assert not any(c in text for c in RAW_CONTROLS)
    assert "\nforged line" not in text
    command = [sys.executable, "-m", "monitor", "watch", str(tmp_path), "--iterations", "1"]
    done = subprocess.run(command, capture_output=True, timeout=CHECK_TIMEOUT_S, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0 and "evil\\x1b[2J" in out, done.stderr
    assert not any(c in out for c in RAW_CONTROLS) and "\nforged line" not in out


def test_a_missing_path_with_escapes_is_named_escaped(tmp_path: Path) -> None:
    healthy(tmp_path)
    missing = tmp_path / "gone\x1b[2J"
    command = [sys.executable, "-m", "monitor", "check", str(tmp_path), str(missing)]
    done = subprocess.run(command, capture_output=True, timeout=CHECK_TIMEOUT_S, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2 and "gone\\x1b[2J" in err and "\x1b" not in err


# -- encodings --------------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_key_or_name_is_replaced(tmp_path: Path) -> None:
    run = bad_run(
        tmp_path,
        [b'{"step": 0, "kl_mean": 0.1, "k\\ud800": 1.0}', b'{"step": 1, "kl_mean": 0.1, "x": 2}'],
    )
    (run / "run.json").write_text('{"name": "run\\udc80", "config": {"k\\ud800": "v\\udfff"}}')
    loaded = load_run(run)
    assert loaded.n_rows == 2 and "k\ufffd" in loaded.series_names
    for name in [*loaded.series_names, loaded.name]:
        name.encode("utf-8")  # charts, pages and logs can write it out
    assert loaded.name == "run\ufffd" and loaded.info["config"] == {"k\ufffd": "v\ufffd"}
    assert utf8_text("a\ud800b") == "a\ufffdb"
    healthy(tmp_path)
    _rc, document, _ = check(tmp_path)
    assert "k\ufffd" in runs_by_name(document)["bad"]["series"]


def test_a_utf16_file_is_named_by_its_encoding(tmp_path: Path) -> None:
    healthy(tmp_path)
    text = "".join(json.dumps({"step": s, "kl_mean": 0.02}) + "\n" for s in range(5))
    run = bad_run(tmp_path)
    (run / "metrics.jsonl").write_bytes(text.encode("utf-16"))  # BOM FF FE
    (run / "run.json").write_bytes(json.dumps({"name": "x"}).encode("utf-16"))
    loaded = load_run(run)
    assert loaded.problems[0].file == "run.json" and "UTF-16" in loaded.problems[0].reason
    said = "UTF-16 encoded file: klwatch reads UTF-8"
    assert any(p.file == "metrics.jsonl" and p.reason.startswith(said) for p in loaded.problems)
    rc, document, _ = check(tmp_path)
    bad = assert_healthy_reported(document)
    (unreadable,) = [a for a in bad["alerts"] if a["rule"] == "records_unreadable"]
    assert "UTF-16" in unreadable["message"] and rc == 1


# -- all at once --------------------------------------------------------------------------------


def test_one_root_of_every_hostile_file_costs_only_those_runs(tmp_path: Path) -> None:
    """The store (the server's reader) and check, over a root holding every case at once."""
    root = tmp_path / "root"
    healthy(root)
    cases = root / "cases"
    for name, lines in [
        ("nested", NESTED_LINES),
        ("range", [b'{"step": %d}' % 2**63, b'{"step": 1, "kl_mean": 1' + b"0" * 400 + b"}"]),
    ]:
        bad_run(cases / name, lines)
    os.mkfifo(bad_run(cases / "fifo_info") / "run.json")
    (cases / "fifo_metrics" / "bad").mkdir(parents=True)
    os.mkfifo(cases / "fifo_metrics" / "bad" / "metrics.jsonl")
    secret_links(cases / "links", tmp_path / "outside")
    (bad_run(cases / "zero") / "run.json").symlink_to("/dev/zero")
    utf16 = bad_run(cases / "utf16")
    (utf16 / "metrics.jsonl").write_bytes('{"step": 0, "kl_mean": 0.1}\n'.encode("utf-16"))
    rc, document, _ = check(root)
    assert rc == 1 and SECRET not in json.dumps(document)
    assert len(document["runs"]) == 8
    assert_healthy_reported(document)
    # The store in a subprocess: a crash or a hang there would take the page down.
    script = (
        "import sys; from monitor.dashboard.store import RunStore\n"
        "s = RunStore([sys.argv[1]], watch=False)\n"
        "for rid in s.run_ids():\n"
        "    e = s.get(rid); run = e.run if e else None\n"
        "    print(rid, run.n_rows if run else None, run.name if run else None)\n"
        "s.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        capture_output=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "root/good 30 healthy" in out and SECRET not in out
