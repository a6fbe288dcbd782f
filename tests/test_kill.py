"""kill -9 of a logging process loses nothing that log() had returned."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from monitor import load_run

pytestmark = pytest.mark.slow  # five child processes killed at random moments

CHILD = textwrap.dedent(
    """
    import sys
    from monitor import RunWriter
    writer = RunWriter(sys.argv[1], config={"kl_estimator": "k3"})
    step = 0
    while True:
        writer.log(step, kl_mean=0.01 * step, kl_max=0.1, beta=0.1, reward_mean=1.0,
                   pad=float(step) * 1e-3)
        # Acknowledge only after log() returned: these steps must survive SIGKILL.
        sys.stdout.write(f"{step}\\n")
        sys.stdout.flush()
        step += 1
    """
)


def test_sigkill_at_random_moments_loses_no_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(1234)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(run_dir)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # wait until it is really logging
        assert first.strip() == b"0"
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        acknowledged = [int(x) for x in (first + rest).split()]
        run = load_run(run_dir)
        steps = set(run.steps.tolist())
        missing = [s for s in acknowledged if s not in steps]
        assert not missing, f"attempt {attempt}: lost acknowledged steps {missing[:5]}"
        assert len(acknowledged) > 1
        # At most one torn line at the end, and nothing else is skipped.
        assert run.skipped == 0
        assert run.source.tail.pending_bytes < 400
