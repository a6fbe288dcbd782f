"""`pip install klwatch` works: sdist and wheel built with `python -m build`, the wheel
installed with its dependencies into a fresh venv (no torch), and `klwatch` run from a
directory outside the checkout.

Dependencies come from the package index, constrained to requirements.txt's pins (so pip
takes them from its cache after `make test` installed the same versions, and the ranges in
pyproject.toml are checked to admit the pinned set). Bytecode is not compiled on install.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# What a build reads: pyproject.toml says what goes into the packages.
SOURCES = ("pyproject.toml", "README.md", "app.py", ".streamlit", "assets", "monitor", "trainer")
APP_FILES = {
    "klwatch_app/app.py",
    "klwatch_app/.streamlit/config.toml",
    "klwatch_app/assets/icon.png",
}
SERVE_TIMEOUT_S = 60


@dataclass
class Installed:
    wheel: Path
    venv: Path
    work: Path  # a directory outside the checkout, where the commands run
    runs: Path  # a root holding a copy of sample_runs/fixed-beta
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> None:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    # Build from a copy: a build writes build/ and *.egg-info/ beside its sources.
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    # sdist, then the wheel from the sdist (so the sdist must hold everything the wheel needs)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)])
    (wheel,) = dist.glob("klwatch-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]
    constraints = str(REPO / "requirements.txt")
    _run([*pip, "install", "-q", "--no-compile", str(wheel), "-c", constraints])
    work = tmp / "elsewhere"
    runs = work / "runs"
    shutil.copytree(REPO / "sample_runs" / "fixed-beta", runs / "fixed-beta")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(wheel, venv, work, runs, env)


def test_the_wheel_ships_the_dashboard_and_no_torch(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(metadata_name).decode()
    assert {n for n in names if n.startswith("klwatch_app/")} == APP_FILES
    assert "trainer/assets/policy.pt" in names
    assert "monitor/cli.py" in names and "monitor/sources/tensorboard.py" in names
    assert "monitor/dashboard/static/live_charts.js" in names
    assert "monitor/dashboard/static/uplot/uPlot.iife.min.js" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "tools/")) for n in names)
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in requires if "extra ==" not in line]
    assert base and not any("torch" in line for line in base)
    assert any(line.startswith("Requires-Dist: torch") and "trainer" in line for line in requires)


def test_the_install_holds_no_torch_and_its_dependencies_agree(installed: Installed) -> None:
    python = installed.bin("python")
    probe = installed.run(python, "-c", "import importlib.util as u; print(u.find_spec('torch'))")
    assert probe.stdout.strip() == "None", probe.stderr
    check = installed.run(sys.executable, "-m", "pip", "--python", python, "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_klwatch_help_lists_the_subcommands(installed: Installed) -> None:
    result = installed.run(installed.bin("klwatch"), "--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "check", "watch", "train"):
        assert command in result.stdout


def test_klwatch_check_finds_the_high_kl_of_fixed_beta(installed: Installed) -> None:
    result = installed.run(installed.bin("klwatch"), "check", str(installed.runs / "fixed-beta"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kl_high" in result.stdout


def test_klwatch_train_without_torch_says_what_to_install(installed: Installed) -> None:
    result = installed.run(installed.bin("klwatch"), "train", "--steps", "1")
    assert result.returncode == 2
    assert "pip install 'klwatch[trainer]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_installed_app_renders_a_run(installed: Installed) -> None:
    """The installed app.py (its icon, its imports) renders the copied run without error."""
    script = (
        "import sys, klwatch_app, pathlib\n"
        "from streamlit.testing.v1 import AppTest\n"
        "app = pathlib.Path(next(iter(klwatch_app.__path__))) / 'app.py'\n"
        "at = AppTest.from_file(str(app), default_timeout=60).run()\n"
        "assert not at.exception, at.exception\n"
        "assert not at.error, [e.value for e in at.error]\n"
        "print(app)\n"
    )
    env = {**installed.env, "KLWATCH_ROOTS": str(installed.runs)}
    result = subprocess.run(
        [installed.bin("python"), "-c", script],
        cwd=installed.work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(installed.venv) in result.stdout  # the installed copy, not the checkout's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(installed: Installed) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = _free_port()
    log = installed.work / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [installed.bin("klwatch"), "serve", "--root", "runs", "--port", str(port)],
            cwd=installed.work,
            env=installed.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_klwatch_serve_answers_on_localhost_from_any_directory(
    served: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log = served
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    body = b""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            url = f"http://127.0.0.1:{port}/_stcore/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
                break
        except OSError:
            time.sleep(0.3)
    text = log.read_text(errors="replace")
    assert body == b"ok", f"no health answer in {SERVE_TIMEOUT_S} s\n{text}"
    assert f"http://127.0.0.1:{port}" in text  # bound to localhost, as the shipped config says
    # klwatch's own routes are mounted (st.App) and serve the shipped chart library.
    url = f"http://127.0.0.1:{port}/klwatch/static/uPlot.iife.min.js"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200 and b"uPlot" in response.read(4000)
