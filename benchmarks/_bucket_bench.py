"""A run in a bucket: a 1M-step metrics.jsonl on a local S3 server (moto, 127.0.0.1), cold
read through the mirror, then the refresh after the uploader re-puts the file with +100
lines — only the new bytes may be fetched (printed), and the refresh of the 1M-step run is
compared with the same refresh of a 1k-step run (ratio, goal ≤ 1.5).

    .venv/bin/python benchmarks/_bucket_bench.py [--steps 1000000] [--append 100]
(bench_sources.py runs it after the TensorBoard and trackio figures.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.run import load_run  # noqa: E402
from monitor.sources import bucket  # noqa: E402

BUCKET = "bench"


def lines(start: int, n: int) -> bytes:
    rng = np.random.default_rng(start)
    kl = rng.lognormal(-3.0, 0.3, n)
    rows = (
        f'{{"step":{s},"time":{1.7e9 + s},"kl_mean":{k:.6g},"kl_max":{4 * k:.6g},'
        f'"beta":0.1,"reward_mean":{r:.4f}}}'
        for s, k, r in zip(
            range(start, start + n), kl.tolist(), rng.random(n).tolist(), strict=True
        )
    )
    return ("\n".join(rows) + "\n").encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranged_get(client: object, key: str, start: int, end: int) -> float:
    """Seconds the server takes to answer one ranged GET (the floor under a refresh)."""
    t0 = time.perf_counter()
    response = client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{end - 1}")  # type: ignore[attr-defined]
    response["Body"].read()
    return time.perf_counter() - t0


def refresh_after_append(
    client: object, key: str, body: bytes, steps: int, append: int
) -> tuple[float, int, float]:
    """(seconds for run.refresh(), bytes fetched, seconds of the server's own ranged GET of
    the same bytes) after the object grows by `append` lines."""
    run = load_run(f"s3://{BUCKET}/{key}")
    assert run.n_rows == steps, run.n_rows
    more = lines(steps, append)
    client.put_object(Bucket=BUCKET, Key=f"{key}/metrics.jsonl", Body=body + more)  # type: ignore[attr-defined]
    mirror = run.mirror
    assert mirror is not None
    mirror._next_sync = 0.0  # the poll interval has passed
    t0 = time.perf_counter()
    run.refresh()
    elapsed = time.perf_counter() - t0
    assert run.n_rows == steps + append
    fetched = mirror.last_report.fetched_bytes
    assert fetched == len(more), (fetched, len(more))
    floor = min(
        ranged_get(client, f"{key}/metrics.jsonl", len(body), len(body) + len(more))
        for _ in range(3)
    )
    return elapsed, fetched, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--append", type=int, default=100)
    args, _ = parser.parse_known_args()
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["KLWATCH_CACHE_DIR"] = cache
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket=BUCKET)
            big, small = lines(0, args.steps), lines(0, 1000)
            for key, body in (("big", big), ("small", small)):
                client.put_object(Bucket=BUCKET, Key=f"{key}/metrics.jsonl", Body=body)
                client.put_object(
                    Bucket=BUCKET, Key=f"{key}/run.json", Body=json.dumps({"name": key})
                )
            t0 = time.perf_counter()
            load_run(f"s3://{BUCKET}/big")
            cold = time.perf_counter() - t0
            print(
                f"bucket      cold read of a {args.steps:,}-step metrics.jsonl "
                f"({len(big) / 1e6:.0f} MB) through the mirror: {cold:.2f} s"
            )
            bucket._MIRRORS.clear()
            small_s, small_bytes, small_get = refresh_after_append(
                client, "small", small, 1000, args.append
            )
            big_s, big_bytes, big_get = refresh_after_append(
                client, "big", big, args.steps, args.append
            )
            print(
                f"bucket      refresh +{args.append} lines: 1k-step run {small_s * 1e3:.1f} ms "
                f"({small_bytes:,} bytes fetched) | {args.steps // 1000}k-step run "
                f"{big_s * 1e3:.1f} ms ({big_bytes:,} bytes fetched); only the new bytes"
            )
            ours_small, ours_big = small_s - small_get, big_s - big_get
            print(
                f"bucket      the server's own ranged GET of those bytes: {small_get * 1e3:.1f} / "
                f"{big_get * 1e3:.1f} ms (moto slices the whole object) | klwatch's part "
                f"{ours_small * 1e3:.1f} / {ours_big * 1e3:.1f} ms, ratio "
                f"{ours_big / ours_small:.2f} (goal <= 1.5)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
