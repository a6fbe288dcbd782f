"""Reading rules of metrics.jsonl (one test per rule) and the incremental Run."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from monitor import load_run, open_run
from monitor.sources.tail import FileTail


def write(path: Path, data: bytes, mode: str = "ab") -> None:
    with open(path / "metrics.jsonl", mode) as f:
        f.write(data)


def rec(step: int, kl: float = 0.05, **extra: object) -> bytes:
    fields = "".join(f',"{k}":{v}' for k, v in extra.items())
    return f'{{"step":{step},"time":{1000 + step},"kl_mean":{kl}{fields}}}\n'.encode()


def test_missing_metrics_gives_clear_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no run in .*metrics\.jsonl"):
        load_run(tmp_path)


def test_empty_file_gives_zero_rows(tmp_path: Path) -> None:
    write(tmp_path, b"")
    run = load_run(tmp_path)
    assert run.n_rows == 0 and list(run.metrics.columns) == ["step"]
    assert run.last_step is None


def test_refresh_reads_only_new_records(tmp_path: Path) -> None:
    write(tmp_path, rec(0) + rec(1))
    run = open_run(tmp_path)
    assert run.refresh() == 2
    offset = run.source.tail.offset
    assert run.refresh() == 0 and run.source.tail.offset == offset
    write(tmp_path, rec(2))
    assert run.refresh() == 1
    assert run.metrics["step"].tolist() == [0, 1, 2]
    assert run.metrics["kl_mean"].tolist() == [0.05] * 3


def test_line_without_newline_is_held_until_completed(tmp_path: Path) -> None:
    line = rec(0)
    write(tmp_path, line[:10])
    run = open_run(tmp_path)
    assert run.refresh() == 0 and run.skipped == 0
    write(tmp_path, line[10:])
    assert run.refresh() == 1 and run.skipped == 0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"not json\n", "not valid JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'"text"\n', "not a JSON object"),
        (b'{"kl_mean": 0.1}\n', "'step' must be an integer"),
        (b'{"step": "3"}\n', "'step' must be an integer"),
        (b'{"step": 1.0}\n', "'step' must be an integer"),
        (b'{"step": -4}\n', "'step' must be an integer"),
        (b'{"step": true}\n', "'step' must be an integer"),
        (b'{"step": 5, "kl_mean": 0.1\n', "not valid JSON"),
        (b'{"step": 5}{"step": 6}\n', "not valid JSON"),
    ],
)
def test_bad_line_is_skipped_and_counted_never_fatal(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    write(tmp_path, rec(0) + bad + rec(2))
    run = load_run(tmp_path)
    assert run.steps.tolist() == [0, 2]
    assert run.skipped == 1
    problem = run.problems[-1]
    assert problem.file == "metrics.jsonl" and problem.line == 2
    assert reason in problem.reason, problem


def test_invalid_utf8_skips_that_line_only(tmp_path: Path) -> None:
    write(tmp_path, rec(0) + b'{"step":1,"note":"\xff\xfe"}\n' + rec(2))
    run = load_run(tmp_path)
    assert run.steps.tolist() == [0, 2]
    assert run.problems[-1].reason == "invalid UTF-8"


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    write(
        tmp_path, b"\xef\xbb\xbf" + rec(0).replace(b"\n", b"\r\n") + rec(1).replace(b"\n", b"\r\n")
    )
    run = load_run(tmp_path)
    assert run.steps.tolist() == [0, 1] and run.skipped == 0


def test_python_nan_and_infinity_tokens_are_floats(tmp_path: Path) -> None:
    write(tmp_path, b'{"step":0,"kl_mean":NaN,"kl_max":Infinity,"beta":-Infinity}\n')
    row = load_run(tmp_path).metrics.iloc[0]
    assert math.isnan(row["kl_mean"]) and row["kl_max"] == math.inf and row["beta"] == -math.inf


def test_nan_tokens_next_to_a_bad_line(tmp_path: Path) -> None:
    # The slow path (one bad line in the piece) must read NaN tokens too.
    write(tmp_path, b'{"step":0,"kl_mean":NaN}\ngarbage\n{"step":1,"kl_mean":Infinity}\n')
    run = load_run(tmp_path)
    assert run.steps.tolist() == [0, 1] and run.skipped == 1
    assert np.isnan(run.column("kl_mean")[0]) and run.column("kl_mean")[1] == math.inf


def test_non_numeric_extras_are_ignored_and_null_is_missing(tmp_path: Path) -> None:
    write(tmp_path, b'{"step":0,"kl_mean":0.1,"tag":"a","ok":true,"nested":{"a":1},"x":null}\n')
    run = load_run(tmp_path)
    assert set(run.series_names) == {"kl_mean", "x"}
    assert math.isnan(run.column("x")[0])


def test_new_series_mid_run_is_nan_before_it_appears(tmp_path: Path) -> None:
    write(tmp_path, rec(0) + rec(1))
    run = load_run(tmp_path)
    write(tmp_path, rec(2, entropy=1.5))
    run.refresh()
    assert np.isnan(run.column("entropy")[:2]).all() and run.column("entropy")[2] == 1.5
    write(tmp_path, rec(3))
    run.refresh()
    assert np.isnan(run.column("entropy")[3])


def test_absurdly_long_line_is_skipped_without_holding_it(tmp_path: Path) -> None:
    run = open_run(tmp_path)
    run.source.tail = FileTail(run.source.metrics_path, max_line_bytes=1000, read_block_bytes=256)
    write(tmp_path, rec(0) + b'{"step":1,"pad":"' + b"x" * 5000)
    assert run.refresh() == 1
    assert run.source.tail.pending_bytes <= 1000 + 256  # never holds the whole long line
    write(tmp_path, b'"}\n' + rec(2))
    assert run.refresh() == 1
    assert run.steps.tolist() == [0, 2]
    assert run.problems[-1].line == 2 and "line too long" in run.problems[-1].reason


def test_truncated_file_is_read_again_from_start(tmp_path: Path) -> None:
    write(tmp_path, rec(0) + rec(1) + rec(2))
    run = load_run(tmp_path)
    generation = run.generation
    write(tmp_path, rec(0, kl=0.5), mode="wb")
    run.refresh()
    assert run.steps.tolist() == [0] and run.column("kl_mean").tolist() == [0.5]
    assert run.generation > generation
    assert "truncated or replaced" in run.problems[-1].reason


def test_replaced_file_is_read_again_from_start(tmp_path: Path) -> None:
    write(tmp_path, rec(0) + rec(1))
    run = load_run(tmp_path)
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(rec(0, kl=0.7) + rec(1, kl=0.7) + rec(2, kl=0.7))
    os.replace(replacement, tmp_path / "metrics.jsonl")
    run.refresh()
    assert run.column("kl_mean").tolist() == [0.7, 0.7, 0.7]


def test_step_going_back_supersedes_rows_from_that_step(tmp_path: Path) -> None:
    write(tmp_path, b"".join(rec(s, kl=0.01) for s in range(6)))
    run = load_run(tmp_path)
    # resume from a checkpoint at step 3: rows 3.. of the old segment are replaced
    write(tmp_path, b"".join(rec(s, kl=0.02) for s in range(3, 8)))
    run.refresh()
    assert run.steps.tolist() == list(range(8))
    assert run.column("kl_mean").tolist() == [0.01] * 3 + [0.02] * 5
    assert run.table.superseded_rows == 3


def test_resume_inside_one_read_matches_incremental(tmp_path: Path) -> None:
    data = b"".join(rec(s, kl=0.01) for s in range(6)) + b"".join(
        rec(s, kl=0.02) for s in range(2, 4)
    )
    write(tmp_path, data)
    run = load_run(tmp_path)
    assert run.steps.tolist() == [0, 1, 2, 3]
    assert run.column("kl_mean").tolist() == [0.01, 0.01, 0.02, 0.02]


def test_old_views_do_not_change_after_a_resume(tmp_path: Path) -> None:
    write(tmp_path, b"".join(rec(s, kl=0.01) for s in range(4)))
    run = load_run(tmp_path)
    before = run.column("kl_mean")
    write(tmp_path, rec(1, kl=0.9) + rec(2, kl=0.9))
    run.refresh()
    assert before.tolist() == [0.01] * 4


def test_run_json_problems_are_reported_not_fatal(tmp_path: Path) -> None:
    write(tmp_path, rec(0))
    (tmp_path / "run.json").write_text("{not json")
    run = load_run(tmp_path)
    assert run.info == {} and run.n_rows == 1
    assert "not valid JSON" in str(run.problems[0])
    (tmp_path / "run.json").write_text('{"name": "fixed", "status": "finished"}')
    run.refresh()
    assert run.info["name"] == "fixed" and run.status() == "finished"


def test_status_stalled_when_running_run_goes_silent(tmp_path: Path) -> None:
    write(tmp_path, b"".join(rec(s) for s in range(10)))  # one step per second
    (tmp_path / "run.json").write_text('{"status": "running"}')
    run = load_run(tmp_path)
    written = run.last_write_time
    assert written is not None
    assert run.status(now=written + 5) == "running"
    assert run.status(now=written + 3600) == "stalled"


def test_metrics_frame_has_unique_ascending_steps(tmp_path: Path) -> None:
    steps = [0, 1, 2, 3, 1, 2, 5, 4, 6]
    write(tmp_path, b"".join(rec(s, kl=i) for i, s in enumerate(steps)))
    frame = load_run(tmp_path).metrics
    assert frame["step"].is_monotonic_increasing and frame["step"].is_unique
    assert frame["step"].tolist() == [0, 1, 2, 4, 6]
    assert frame["kl_mean"].tolist() == [0, 4, 5, 7, 8]
