"""Property: any split of a valid byte stream, fed piece by piece, equals a one-shot parse."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import load_run, open_run
from monitor.sources.tail import FileTail

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(2**53), max_value=2**53),
)
records = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),
        st.dictionaries(st.sampled_from(["kl_mean", "kl_max", "beta", "x é"]), values),
    ),
    max_size=40,
)


def encode(rows: list[tuple[int, dict[str, float]]], crlf: bool) -> bytes:
    end = "\r\n" if crlf else "\n"
    return "".join(json.dumps({"step": s, **m}) + end for s, m in rows).encode()


def frame_of(run) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    frame = run.metrics
    return {c: [v if not math.isnan(v) else "nan" for v in frame[c].tolist()] for c in frame}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=records,
    # Small cuts too: a split inside the 3-byte BOM or a CRLF must not matter.
    cuts=st.lists(
        st.one_of(st.integers(0, 4), st.integers(min_value=0, max_value=4000)), max_size=12
    ),
    crlf=st.booleans(),
    bom=st.booleans(),
    read_block=st.sampled_from([1, 7, 64, 16 << 20]),
)
def test_any_split_equals_one_shot(
    tmp_path_factory,
    rows,
    cuts,
    crlf,
    bom,
    read_block,  # type: ignore[no-untyped-def]
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + encode(rows, crlf)
    one_shot_dir: Path = tmp_path_factory.mktemp("one")
    (one_shot_dir / "metrics.jsonl").write_bytes(data)
    expected = load_run(one_shot_dir)

    piece_dir: Path = tmp_path_factory.mktemp("pieces")
    path = piece_dir / "metrics.jsonl"
    path.write_bytes(b"")
    run = open_run(piece_dir)
    run.source.tail = FileTail(path, read_block_bytes=read_block)  # lines straddling reads too
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    total = 0
    for start, end in itertools.pairwise(bounds):
        with open(path, "ab") as f:
            f.write(data[start:end])
        total += run.refresh()
    total += run.refresh()

    assert total == len(rows)
    assert run.skipped == expected.skipped == 0
    assert frame_of(run) == frame_of(expected)
    assert np.array_equal(run.steps, expected.steps)
