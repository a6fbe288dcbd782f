"""The first ten minutes, as README.md tells them: every ```python block in it runs as written
with the project's venv from a directory outside the checkout, and the Makefile's install
gives that venv `klwatch` and an importable `monitor`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) for each ```python block."""
    return [(markdown.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(markdown)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def venv_python() -> Path:
    """The interpreter `make run` / `make test` create. A checkout without it (tests run from
    some other environment) cannot test what the Makefile installs."""
    python = VENV_BIN / "python"
    if not python.exists():
        pytest.skip(f"no {python}: `make test` creates it")
    return python


def run_outside(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    # Nothing that would let the checkout leak onto sys.path: the script must find `monitor`
    # the way a user's script does, through the venv's install.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONSAFEPATH"] = "1"
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_readme_has_python_blocks() -> None:
    assert BLOCKS, "README.md has no ```python block: the extractor or the README changed"
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n") == [(2, "a = 1\n")]


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_python_block_runs_as_written(tmp_path: Path, line: int, code: str) -> None:
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code, encoding="utf-8")
    done = run_outside([str(venv_python()), script.name], cwd=tmp_path)
    assert done.returncode == 0, f"README.md:{line} block failed:\n{done.stdout}\n{done.stderr}"


def test_venv_imports_monitor_from_outside_the_checkout(tmp_path: Path) -> None:
    script = tmp_path / "uses_monitor.py"
    script.write_text(
        "import monitor, trainer.config\n"
        "from monitor import RunWriter\n"
        "RunWriter('r').log(0, kl_mean=0.01)\n"
        "print(monitor.__file__)\n"
    )
    done = run_outside([str(venv_python()), script.name], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == REPO / "monitor" / "__init__.py"
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 1


def test_venv_has_the_klwatch_command(tmp_path: Path) -> None:
    venv_python()
    klwatch = VENV_BIN / "klwatch"
    assert klwatch.exists(), f"{klwatch} missing: the Makefile's install target makes it"
    done = run_outside([str(klwatch), "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: klwatch" in done.stdout and "check" in done.stdout


def test_makefile_installs_the_project_editable() -> None:
    """`make run` and `make test` share one install target; it must install klwatch itself
    (editable, so the checkout's edits are what the venv runs) after the pinned requirements."""
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in target.splitlines()]
    requirements = next(i for i, s in enumerate(lines) if "-r requirements-dev.txt" in s)
    editable = next(i for i, s in enumerate(lines) if s.startswith("$(PY)") and " -e ." in s)
    assert requirements < editable
    assert "--no-deps" in lines[editable]
    assert re.search(r"^run: \$\(VENV\)/\.installed", makefile, re.MULTILINE)
    assert re.search(r"^test: \$\(VENV\)/\.installed", makefile, re.MULTILINE)
