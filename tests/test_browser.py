"""One real browser against `streamlit run`, while a writer appends to a run.

Headless Debian chromium driven by Playwright: the KL chart renders, and a NaN written by
the "trainer" shows its alert on the open page without a reload. A screenshot is saved to
test-artifacts/. Needs Debian's chromium at /usr/bin/chromium: `make test` installs it, and
without it these tests fail (they are never skipped into a green run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from monitor import RunWriter
from tests.conftest import write_steps
from tools.live_server import LIVE_STATUS, follow_steps
from tools.plain_logger import PlainLogger

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
]
SERVER_START_TIMEOUT_S = 60.0
# A functional bound: the alert shows at all. The latency goals (≤ 1 s p50, ≤ 2 s p95) are
# timed over many episodes by benchmarks/bench_alert_latency.py, not asserted here.
ALERT_TIMEOUT_S = 30.0
STEP_INTERVAL_S = 0.1
# The run page's live charts (monitor/dashboard/static/live_charts.js): the KL chart's card
# (and LIVE_STATUS, their status line, from tools/live_server.py).
KL_CHART = '.kw-card[data-chart="kl"]'

from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def chromium_present() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: run `make test` (it apt-installs chromium)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveWriter:
    """A stand-in trainer: one healthy record every STEP_INTERVAL_S on its own thread."""

    run_dir: Path
    step: int = 0
    nan_written_at: float | None = None
    _inject_nan: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, initial_steps: int = 300) -> None:
        self._writer = RunWriter(self.run_dir, config={"target_kl": 0.05}, name="live")
        write_steps(self._writer, 0, initial_steps)
        self.step = initial_steps
        self._thread = threading.Thread(target=self._loop, name="live-writer", daemon=True)
        self._thread.start()

    def inject_nan(self) -> None:
        """Write a NaN step next, then stop writing (so the alert stays active)."""
        self._inject_nan.set()

    def _loop(self) -> None:
        while not self._stop.wait(STEP_INTERVAL_S):
            if self._inject_nan.is_set():
                nan = float("nan")
                self._writer.log(self.step, kl_mean=nan, kl_max=nan, beta=0.1, reward_mean=0.5)
                self.nan_written_at = time.monotonic()
                self.step += 1
                return
            write_steps(self._writer, self.step, self.step + 1)
            self.step += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._writer.close()


@pytest.fixture
def live_writer(tmp_path: Path) -> Iterator[LiveWriter]:
    writer = LiveWriter(tmp_path / "runs" / "live")
    writer.start()
    yield writer
    writer.stop()


@contextlib.contextmanager
def streamlit_server(
    root: Path,
    *more_roots: Path,
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """`streamlit run app.py` on a free 127.0.0.1 port; killed (whole group) at the end.
    `flags`: more Streamlit options (`--theme.base dark`); `env`: more environment."""
    port = free_port()
    log_path = ARTIFACTS / "streamlit-server.log"
    ARTIFACTS.mkdir(exist_ok=True)
    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        *flags,
        "--", "--root", str(root),
        *(arg for extra in more_roots for arg in ("--root", str(extra))),
    ]  # fmt: skip
    env = {**os.environ, "KLWATCH_ROOTS": "", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url + base_path(flags), proc, log_path)
        yield url
    finally:
        stop_process_group(proc)


def base_path(flags: Sequence[str]) -> str:
    """The URL prefix `--server.baseUrlPath X` in `flags` gives the app ("" or "/X")."""
    flags = list(flags)
    if "--server.baseUrlPath" not in flags:
        return ""
    return "/" + flags[flags.index("--server.baseUrlPath") + 1].strip("/")


@pytest.fixture
def server(live_writer: LiveWriter) -> Iterator[str]:
    with streamlit_server(live_writer.run_dir.parent) as url:
        yield url


def wait_until_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log_path.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)  # polling a socket: there is nothing to wait on instead
    raise TimeoutError(f"streamlit not healthy after {SERVER_START_TIMEOUT_S}s")


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def page() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1100})
            yield context.new_page()
        finally:
            browser.close()


def test_kl_chart_renders_and_a_nan_alert_appears_live(
    server: str, page: object, live_writer: LiveWriter
) -> None:
    expect = sync_api.expect
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))  # type: ignore[attr-defined]
    page.goto(f"{server}/?run=runs/live")  # type: ignore[attr-defined]
    kl_chart = page.locator(KL_CHART)  # type: ignore[attr-defined]
    expect(kl_chart).to_be_visible(timeout=30_000)
    expect(kl_chart).to_contain_text("KL divergence", timeout=10_000)
    expect(kl_chart.locator("canvas").first).to_be_attached()
    banner = page.get_by_text("Healthy", exact=False).first  # type: ignore[attr-defined]
    expect(banner).to_be_visible(timeout=10_000)

    # The page follows the writer by itself: the step count grows without a reload.
    page.evaluate("window.__klwatch_marker = 42")  # type: ignore[attr-defined]
    status = page.locator(LIVE_STATUS)  # type: ignore[attr-defined]
    expect(status).to_contain_text("step", timeout=10_000)
    before = status.inner_text()
    expect(status).not_to_have_text(before, timeout=10_000)

    live_writer.inject_nan()
    alert = page.get_by_text("kl_nonfinite").first  # type: ignore[attr-defined]
    expect(alert).to_be_visible(timeout=ALERT_TIMEOUT_S * 1000)
    seen_at = time.monotonic()
    assert live_writer.nan_written_at is not None
    latency = seen_at - live_writer.nan_written_at
    assert page.evaluate("window.__klwatch_marker") == 42  # type: ignore[attr-defined]
    expect(page.get_by_text("Critical").first).to_be_visible()  # type: ignore[attr-defined]
    expect(kl_chart).to_contain_text("kl_nonfinite (critical)")  # its lane on the KL chart
    print(f"NaN written → alert on screen: {latency:.2f} s")
    # A dashboard on an internal network makes no outside requests (icons, fonts, CDNs).
    outside = [u for u in requested if not u.startswith((server, "data:", "blob:"))]
    assert requested and not outside, outside

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-live-alert.png"), full_page=True)  # type: ignore[attr-defined]


def test_html_in_run_names_and_samples_is_shown_as_text(
    server: str, page: object, live_writer: LiveWriter
) -> None:
    evil_name = '<img src=x onerror="window.__pwned=1">**bold** [link](javascript:alert(1))'
    with RunWriter(live_writer.run_dir.parent / "evil", name=evil_name) as writer:
        write_steps(writer, 0, 50)
        writer.log_samples(
            49,
            [
                {
                    "prompt": "<b>hi</b>",
                    "response": "<script>window.__pwned=2</script>",
                    "reward": 1.0,
                }
            ],
        )
    expect = sync_api.expect
    page.goto(f"{server}/?run=runs/evil")  # type: ignore[attr-defined]
    # The literal name is on the page as text (heading), not as an image or bold markup.
    heading = page.get_by_role("heading", name="<img src=x", exact=False).first  # type: ignore[attr-defined]
    expect(heading).to_be_visible(timeout=30_000)
    expect(heading).to_contain_text("**bold**")
    page.get_by_role("tab", name="Samples").click()  # type: ignore[attr-defined]
    samples = page.get_by_role("tabpanel", name="Samples")  # type: ignore[attr-defined]
    # Wait until the sample is rendered, then check it is there as literal text: the
    # markup itself is the text content, and no element was made from it.
    expect(samples).to_contain_text("<b>hi</b>", timeout=30_000)
    expect(samples).to_contain_text("<script>window.__pwned=2</script>")
    assert samples.locator("b").count() == 0
    assert samples.locator("script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"  # type: ignore[attr-defined]
    assert page.locator("img[src=x]").count() == 0  # type: ignore[attr-defined]
    assert page.locator("a[href^=javascript]").count() == 0  # type: ignore[attr-defined]


# -- a real TRL run, live -----------------------------------------------------------------------


def test_live_trl_run_appears_and_grows_on_the_page(tmp_path: Path, page: object) -> None:
    """TRL's GRPOTrainer (tools/tiny_trl.py, report_to tensorboard) trains in a subprocess;
    the page follows its TensorBoard events. Latency per step: first seen on disk by our own
    reader (polled every 50 ms) → shown in the page's caption."""
    from monitor.sources import find_runs, open_source

    root = tmp_path / "runs"
    root.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    trainer = subprocess.Popen(
        [
            sys.executable,
            "tools/tiny_trl.py",
            str(root / "grpo"),
            "--steps",
            "2000",
            "--lr",
            "1e-3",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with streamlit_server(root) as url:
            deadline = time.monotonic() + 120
            locations: list = []
            while not locations and time.monotonic() < deadline:
                locations = [loc for loc in find_runs(root) if loc.format == "tensorboard"]
                time.sleep(0.2)
            assert locations, "TRL wrote no TensorBoard events in 120 s"
            (location,) = locations
            run_id = "runs/" + location.path.relative_to(root).as_posix()
            page.goto(f"{url}/?run={run_id}")  # type: ignore[attr-defined]
            caption = page.locator(LIVE_STATUS)  # type: ignore[attr-defined]
            sync_api.expect(caption).to_contain_text("step", timeout=60_000)
            chart = page.locator(KL_CHART)  # type: ignore[attr-defined]
            sync_api.expect(chart).to_contain_text("mean per token, k3", timeout=10_000)
            # Per step on disk: until the page first showed that step or a later one.
            latencies = follow_steps(
                open_source(location),
                caption.inner_text,
                20,
                running=lambda: trainer.poll() is None,
            )
            assert len(latencies) >= 5, f"the page followed too few steps: {latencies}"
            p50 = latencies[len(latencies) // 2]
            p95 = latencies[int(len(latencies) * 0.95)]
            # Measured, not asserted: the goal (≤ 1 s) is timed by benchmarks/bench_trl_live.py.
            print(f"TRL step on disk → on screen: p50 {p50:.2f} s, p95 {p95:.2f} s")
            sync_api.expect(page.get_by_text("TensorBoard").first).to_be_visible()  # type: ignore[attr-defined]
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser-live-trl.png"), full_page=True)  # type: ignore[attr-defined]
    finally:
        stop_process_group(trainer)  # type: ignore[arg-type]


# -- write → alert latency, with and without run.json -------------------------------------------


@pytest.mark.parametrize("with_run_json", [True, False])
def test_write_to_alert_latency(tmp_path: Path, page: object, with_run_json: bool) -> None:
    """Five NaN episodes written into a live run (10 Hz writer); each must appear on the open
    page as an active kl_nonfinite alert. Latency from the write to the alert on screen."""
    root = tmp_path / "runs"
    run_dir = root / "live"
    if with_run_json:
        writer: Any = RunWriter(run_dir, name="live")
    else:
        writer = PlainLogger(run_dir)
    healthy = {"kl_mean": 0.05, "kl_max": 0.15, "beta": 0.1, "reward_mean": 0.5}
    nan = float("nan")
    step = 0
    for step in range(300):
        writer.log(step, **healthy)
    latencies: list[float] = []
    with streamlit_server(root) as url:
        page.goto(f"{url}/?run=runs/live")  # type: ignore[attr-defined]
        sync_api.expect(page.get_by_text("Healthy").first).to_be_visible(timeout=60_000)  # type: ignore[attr-defined]
        for _trial in range(5):
            for _ in range(15):  # healthy rows: the previous episode clears (10 quiet rows)
                step += 1
                writer.log(step, **healthy)
                time.sleep(0.1)
            step += 1
            writer.log(step, **{**healthy, "kl_mean": nan})
            written = time.monotonic()
            marker = page.get_by_text(f"kl_nonfinite since step {step}").first  # type: ignore[attr-defined]
            deadline = written + ALERT_TIMEOUT_S
            # No rows while waiting: 10 healthy rows would clear the episode before a
            # viewer could read it (it would then show as "cleared" in the history).
            while time.monotonic() < deadline and not marker.is_visible():
                time.sleep(0.02)
            if not marker.is_visible():
                page.screenshot(path=str(ARTIFACTS / "latency-miss.png"), full_page=True)  # type: ignore[attr-defined]
            assert marker.is_visible(), f"the NaN at step {step} never showed"
            latencies.append(time.monotonic() - written)
    if with_run_json:
        writer.close()
    latencies.sort()
    p50, p95 = latencies[len(latencies) // 2], latencies[-1]
    label = "with run.json" if with_run_json else "without run.json"
    # Measured, not asserted: each alert showed within ALERT_TIMEOUT_S above; the latency
    # goals are timed over many episodes by benchmarks/bench_alert_latency.py.
    print(f"write → alert on screen ({label}): p50 {p50:.2f} s, max {p95:.2f} s, {latencies}")


# -- never green while blind; alerts under their own severity (issue 23) ------------------------


def test_damaged_run_missing_root_and_alert_severities(tmp_path: Path, page: object) -> None:
    """A root with a run of damaged lines only, a healthy run and the sample run with one
    critical and two warnings, beside a root that is not mounted. Without ?run= the page
    opens the critical run; its banner groups kl_growth under Critical and the two warnings
    under Warning; the missing root is named; the damaged run is never shown healthy."""
    import shutil

    expect = sync_api.expect
    root = tmp_path / "runs"
    damaged = root / "damaged"
    damaged.mkdir(parents=True)
    (damaged / "metrics.jsonl").write_bytes(
        b"this is not json\n\x00\xff\xfe garbage \x80\n" + b'{"kl_mean": 0.1}\n'
    )
    with RunWriter(root / "healthy", config={"target_kl": 0.05}, name="healthy") as writer:
        write_steps(writer, 0, 200)
    sample = shutil.copytree(REPO / "sample_runs" / "no-penalty-hacking", root / "hacking")
    for f in sample.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))  # older than the healthy run
    missing = tmp_path / "not-mounted"
    with streamlit_server(root, missing) as url:
        page.goto(url)  # type: ignore[attr-defined]
        heading = page.get_by_role("heading", name="no-penalty-hacking")  # type: ignore[attr-defined]
        expect(heading).to_be_visible(timeout=60_000)  # the run that most needs attention
        errors = page.locator('[data-testid="stAlertContentError"]')  # type: ignore[attr-defined]
        critical = errors.filter(has_text="Critical (1 active)")
        expect(critical).to_have_count(1, timeout=10_000)
        expect(critical).to_contain_text("kl_growth since step")
        assert "kl_high" not in critical.inner_text()
        assert "no_kl_penalty" not in critical.inner_text()
        warnings = page.locator('[data-testid="stAlertContentWarning"]')  # type: ignore[attr-defined]
        warning = warnings.filter(has_text="Warning (2 active)")
        expect(warning).to_have_count(1)
        expect(warning).to_contain_text("kl_high since step")
        expect(warning).to_contain_text("no_kl_penalty since step")
        assert "kl_growth" not in warning.inner_text()
        expect(page.get_by_text("1 critical · 2 warnings").first).to_be_visible()  # type: ignore[attr-defined]
        assert page.get_by_text("active critical").count() == 0  # type: ignore[attr-defined]
        sidebar = page.locator('[data-testid="stSidebar"]')  # type: ignore[attr-defined]
        expect(sidebar).to_contain_text("1 critical · 2 warnings")
        expect(sidebar).to_contain_text("3 lines skipped")  # the damaged run's entry
        root_warning = warnings.filter(has_text=str(missing))
        expect(root_warning).to_have_count(1)
        expect(root_warning).to_contain_text("does not exist")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-severity.png"), full_page=True)  # type: ignore[attr-defined]

        page.goto(f"{url}/?run=runs/damaged")  # type: ignore[attr-defined]
        expect(page.get_by_role("heading", name="damaged")).to_be_visible(timeout=30_000)  # type: ignore[attr-defined]
        expect(page.get_by_text("0 steps").first).to_be_visible()  # type: ignore[attr-defined]
        expect(page.get_by_text("3 lines skipped").first).to_be_visible()  # type: ignore[attr-defined]
        expect(warnings.filter(has_text="skipped").first).to_be_visible()
        expect(warnings.filter(has_text=str(missing))).to_have_count(1)  # still named
        success = page.locator('[data-testid="stAlertContentSuccess"]')  # type: ignore[attr-defined]
        assert success.count() == 0, success.all_inner_texts()
        # (the sidebar lists "runs/healthy": only the page itself must not say it)
        main = page.locator('[data-testid="stMain"]')  # type: ignore[attr-defined]
        assert main.get_by_text("Healthy", exact=True).count() == 0
        green = page.locator('[data-testid="stAlertContentSuccess"]')  # type: ignore[attr-defined]
        assert main.get_by_text("Healthy:").count() == 0, green.all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "browser-damaged.png"), full_page=True)  # type: ignore[attr-defined]

        page.goto(f"{url}/?run=runs/healthy")  # type: ignore[attr-defined]
        expect(green).to_contain_text("Healthy: no alert has fired", timeout=30_000)
        expect(warnings.filter(has_text=str(missing))).to_have_count(1)  # others keep serving


def test_hostile_files_cost_only_their_runs_on_the_page(tmp_path: Path, page: object) -> None:
    """A root of hostile files (a 20,000-deep line, a FIFO run.json, run.json and samples
    linked out of the root to a secret, a name with terminal escapes) beside a healthy run:
    the server stays up, each hostile run opens without a traceback, nothing from outside
    the root reaches the page, and the healthy run is still served afterwards."""
    from tests.test_hostile import NESTED_LINES, SECRET, bad_run, secret_links

    expect = sync_api.expect
    root = tmp_path / "runs"
    with RunWriter(root / "healthy", config={"target_kl": 0.05}, name="healthy") as writer:
        write_steps(writer, 0, 120)
    bad_run(root / "nested", NESTED_LINES)
    os.mkfifo(bad_run(root / "fifo") / "run.json")
    secret_links(root / "links", tmp_path / "outside")
    named = bad_run(root / "escapes")
    (named / "run.json").write_text('{"name": "evil\\u001b]0;title\\u0007\\r\\nname"}')
    with streamlit_server(root) as url:
        for run_id in ("runs/nested/bad", "runs/fifo/bad", "runs/links/bad", "runs/escapes/bad"):
            page.goto(f"{url}/?run={run_id}")  # type: ignore[attr-defined]
            main = page.locator('[data-testid="stMain"]')  # type: ignore[attr-defined]
            expect(main.get_by_role("tab", name="Config")).to_be_visible(timeout=60_000)
            main.get_by_role("tab", name="Config").click()
            page.wait_for_timeout(300)  # type: ignore[attr-defined]
            body = page.content()  # type: ignore[attr-defined]
            assert SECRET not in body, run_id
            assert "Traceback" not in body, run_id
            assert page.locator('[data-testid="stException"]').count() == 0, run_id  # type: ignore[attr-defined]
        page.goto(f"{url}/?run=runs/healthy")  # type: ignore[attr-defined]
        expect(page.get_by_role("heading", name="healthy")).to_be_visible(timeout=30_000)  # type: ignore[attr-defined]
        assert SECRET not in page.content()  # type: ignore[attr-defined]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-hostile.png"), full_page=True)  # type: ignore[attr-defined]
