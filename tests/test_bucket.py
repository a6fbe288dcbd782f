"""Runs in a bucket, against a real S3-compatible server (moto's server mode on 127.0.0.1):
found by `check`, tailed with ranged reads of only the new bytes, served by the store, and a
bucket that cannot be read is said for that root while the others keep working."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor import load_run
from monitor.__main__ import main
from monitor.dashboard.store import RunStore
from monitor.sources import bucket
from tests.test_alerts import metrics_lines, noisy, trace

BUCKET = "rlhf-runs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A fresh bucket on the local server; credentials and endpoint from the environment, as
    a user's would be; mirrors in a temporary cache."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("KLWATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(bucket, "_MIRRORS", {})
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def lines(start: int, n: int, level: float = 0.05) -> str:
    return metrics_lines(np.arange(start, start + n), trace(noisy(level, 0.1, n, seed=start)))


def put(client: Any, key: str, body: str | bytes) -> None:
    data = body.encode() if isinstance(body, str) else body
    client.put_object(Bucket=BUCKET, Key=key, Body=data)


def upload_run(client: Any, prefix: str, text: str, status: str = "running") -> None:
    put(client, f"{prefix}/metrics.jsonl", text)
    info = {"name": prefix.rsplit("/", 1)[-1], "status": status, "kl": {"units": "per_token"}}
    put(client, f"{prefix}/run.json", json.dumps(info))
    put(client, f"{prefix}/checkpoint-100/model.safetensors", b"\0" * 4096)  # never fetched


def test_check_finds_runs_in_a_bucket(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upload_run(s3, "team/healthy", lines(0, 300))
    upload_run(s3, "team/runaway", lines(0, 300, level=0.6))
    code = main(["check", f"s3://{BUCKET}/team", "--json"])
    document = json.loads(capsys.readouterr().out)
    by_path = {r["path"]: {a["rule"] for a in r["alerts"]} for r in document["runs"]}
    assert by_path == {
        f"s3://{BUCKET}/team/healthy": set(),
        f"s3://{BUCKET}/team/runaway": {"kl_high"},
    }
    assert code == 1
    mirror = bucket.mirror_for(f"s3://{BUCKET}/team")
    assert not list(mirror.local.rglob("*.safetensors"))  # weights stay in the bucket


def test_a_growing_object_is_tailed_with_only_its_new_bytes(s3: Any) -> None:
    first = lines(0, 1000)
    upload_run(s3, "live/r", first)
    run = load_run(f"s3://{BUCKET}/live/r")
    assert run.n_rows == 1000 and run.where == f"s3://{BUCKET}/live/r"
    mirror = run.mirror
    assert mirror is not None
    more = lines(1000, 100)
    put(s3, "live/r/metrics.jsonl", first + more)  # the uploader re-puts the grown file
    mirror._next_sync = 0.0  # the poll interval has passed
    run.refresh()
    assert run.n_rows == 1100 and run.last_step == 1099
    assert mirror.last_report.fetched_bytes == len(more.encode())


def test_a_bucket_that_cannot_be_read_is_said_and_hides_nothing(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "r").mkdir()
    (local / "r" / "metrics.jsonl").write_text(lines(0, 50))
    code = main(["check", "s3://no-such-bucket-here/runs", str(local)])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert "s3://no-such-bucket-here/runs" in captured.err and "retrying in" in captured.err
    assert "rows 50" in captured.out  # the local root is still reported


def test_the_dashboard_store_serves_a_bucket_root_and_picks_up_new_runs(s3: Any) -> None:
    upload_run(s3, "share/a", lines(0, 200))
    url = f"s3://{BUCKET}/share"
    with RunStore([url], watch=False) as store:
        mirror = bucket.mirror_for(url)
        mirror.sync()
        store.scan(force=True)
        assert [s.split("/", 1)[1] for s in store.run_ids()] == ["a"]
        upload_run(s3, "share/b", lines(0, 100))
        mirror.sync()
        store.scan(force=True)
        assert sorted(s.split("/", 1)[1] for s in store.run_ids()) == ["a", "b"]
        summary = store.summary(store.run_ids()[0])
        assert summary is not None and summary.source == "klwatch · s3"  # the run list's badge
    assert store.root_problems == ()


def test_a_database_in_a_bucket_is_read_as_a_snapshot(s3: Any) -> None:
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "x.db"
        sqlite3.connect(db).close()
        put(s3, "dbs/x.db", db.read_bytes())
    mirror = bucket.mirror_for(f"s3://{BUCKET}/dbs")
    report = mirror.sync()
    assert report.listed == 1 and mirror.snapshots == {"x.db"}


@pytest.mark.slow
def test_a_trl_output_dir_uploaded_to_a_bucket_is_one_run_with_trls_kl(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: a real TRL GRPO run (TensorBoard, save_strategy steps so the output
    dir also holds a checkpoint with weights and trainer_state.json), uploaded as is."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tools.tiny_trl import build_tiny_model, train_grpo

    model = build_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    trained = train_grpo(
        model, out, beta=0.1, max_steps=4, klwatch=False, save_strategy="steps", save_steps=4
    )
    assert list(out.rglob("*.safetensors")) and list(out.rglob("trainer_state.json"))
    for path in out.rglob("*"):
        if path.is_file():
            put(s3, f"trl/grpo/{path.relative_to(out).as_posix()}", path.read_bytes())
    capsys.readouterr()  # what the training printed
    assert main(["check", f"s3://{BUCKET}/trl", "--json"]) in (0, 1)
    (report,) = json.loads(capsys.readouterr().out)["runs"]  # exactly one run
    assert report["source"]["preset"] == "trl_grpo"
    run = load_run(f"s3://{BUCKET}/trl/grpo/runs/{trained.tensorboard_dir.name}")
    logged = [h["kl"] for h in trained.log_history if "kl" in h and "loss" in h]
    assert np.allclose(run.column("kl_mean"), logged, rtol=1e-6)
    mirror = run.mirror
    assert mirror is not None and not list(mirror.local.rglob("*.safetensors"))
