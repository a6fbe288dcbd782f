"""The import rules of docs/architecture.md, checked on the source (AST), so a change that
breaks one fails here with the file and line instead of in a deployment."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.alerts.config import RULE_IDS, AlertConfig
from monitor.alerts.registry import registered_rules

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "streamlit")


def imports(path: Path, *, top_level_only: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of each import in a file; with top_level_only, those run at import
    time (module level), not inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def monitor_files() -> list[Path]:
    return sorted((REPO / "monitor").rglob("*.py"))


@pytest.mark.parametrize("path", monitor_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_monitor_never_imports_torch_transformers_or_streamlit(path: Path) -> None:
    # The hf integration is imported by a trainer, never by monitor itself.
    if path.name == "hf.py" and path.parent.name == "integrations":
        return
    # klwatch serve starts Streamlit's CLI inside the function that serves.
    top_only = path.name == "cli.py"
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for line, module in imports(path, top_level_only=top_only)
        if module.split(".")[0] in HEAVY
    ]
    assert not bad, bad


def test_trainer_uses_monitor_only_for_the_run_writer() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted((REPO / "trainer").rglob("*.py"))
        for line, module in imports(path, top_level_only=False)
        if module.split(".")[0] == "monitor" and module not in ("monitor", "monitor.runlog")
    ]
    assert not bad, bad


def test_only_the_run_writer_opens_files_for_writing() -> None:
    """Nothing but RunWriter writes into run directories (the dashboard may be pointed at a
    read-only share); notify.py's state file lives under the user's state directory, and
    sources/bucket.py's mirrors of bucket runs under klwatch's cache directory."""
    allowed = {"runlog.py", "notify.py", "bucket.py"}
    writers = []
    for path in monitor_files():
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _writes(node):
                writers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not writers, writers


WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_APPEND", "O_CREAT", "O_TRUNC"}


def _writes(call: ast.Call) -> bool:
    """A call that writes a file: write_text/write_bytes, open()/Path.open() with a mode
    holding w, a, x or + (positional or mode=), os.open with a write flag, or any open whose
    mode is not a constant (it cannot be shown to be read-only)."""
    func = call.func
    name = getattr(func, "attr", getattr(func, "id", ""))
    if name in ("write_text", "write_bytes"):
        return True
    if name == "open" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "os":
        flags = {
            n.attr for a in call.args[1:2] for n in ast.walk(a) if isinstance(n, ast.Attribute)
        }
        return bool(flags & WRITE_FLAGS)
    if name != "open":
        return False
    keyword = [k.value for k in call.keywords if k.arg == "mode"]
    if isinstance(func, ast.Attribute):
        # Path.open(mode): judged when the mode is a string or mode= (other .open methods,
        # such as AlertLog.open(rule, …), take no mode)
        first = call.args[:1]
        is_mode = (
            bool(first) and isinstance(first[0], ast.Constant) and isinstance(first[0].value, str)
        )
        modes = keyword + (first if is_mode else [])
    else:
        modes = keyword + call.args[1:2]  # builtin open(path, mode)
    for mode in modes:
        if not isinstance(mode, ast.Constant):
            return True  # a mode chosen at run time cannot be shown to be read-only
        if isinstance(mode.value, str) and set(mode.value) & set("wax+"):
            return True
    return False


def test_the_write_guard_sees_every_spelling() -> None:
    """The guard itself catches each way of opening a file for writing."""
    writing = [
        'open(p, "w")',
        'open(p, mode="a")',
        'path.open("w")',
        'Path(p).open(mode="x")',
        "os.open(p, os.O_WRONLY | os.O_CREAT)",
        "p.write_text('x')",
        "open(p, some_mode)",
        "path.open(mode=some_mode)",
    ]
    reading = [
        "open(p)",
        'open(p, "rb")',
        "path.open()",
        'path.open("r")',
        "os.open(p, os.O_RDONLY)",
    ]
    for source in writing:
        assert _writes(ast.parse(source, mode="eval").body), source  # type: ignore[arg-type]
    for source in reading:
        assert not _writes(ast.parse(source, mode="eval").body), source  # type: ignore[arg-type]


PAGE_FILES = ("app.py", "monitor/dashboard/views.py", "monitor/dashboard/charts.py")
# What a page may ask the store; everything else (entries, engines, locks) is the store's.
STORE_METHODS_FOR_PAGES = {"view", "pulse", "summary", "summaries", "summaries_cached", "refresh"}


@pytest.mark.parametrize("name", PAGE_FILES)
def test_pages_read_frozen_views_only(name: str) -> None:
    """app.py, views.py and charts.py read runs through RunView / RunPulse / RunSummary:
    no `Any` in a signature, no getattr fishing, no reach into the store's entries or the
    alert engine (issue 11)."""
    tree = ast.parse((REPO / name).read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs]
            for annotation in [*annotations, node.returns]:
                if annotation is not None and "Any" in ast.unparse(annotation):
                    bad.append(f"{name}:{node.lineno} {node.name}: Any in its signature")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr":
            bad.append(f"{name}:{node.lineno}: getattr")
        if isinstance(node, ast.Attribute) and node.attr in ("monitored", "engine", "entry"):
            bad.append(f"{name}:{node.lineno}: .{node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and getattr(node.func.value, "id", "") == "store"
            and node.func.attr not in STORE_METHODS_FOR_PAGES | {"close"}
        ):
            bad.append(f"{name}:{node.lineno}: store.{node.func.attr}()")
    assert not bad, bad


def test_every_rule_id_has_one_detector_a_config_section_and_docs() -> None:
    """Adding a rule (docs/alerts.md) touches the registry, monitor/alerts/config.py and the docs:
    a rule id missing from any of them, or a detector without a rule id, fails here."""
    registered = registered_rules()
    assert len(registered) == len(set(registered)), "a rule id is registered twice"
    assert sorted(registered) == sorted(RULE_IDS)
    sections = {f.name for f in dataclasses.fields(AlertConfig)}
    for rule in RULE_IDS:
        assert rule in sections, f"AlertConfig has no section '{rule}'"
        section = getattr(AlertConfig(), rule)
        assert isinstance(section.enabled, bool) and isinstance(section.severity, str), rule
    docs = (REPO / "docs" / "alerts.md").read_text()
    undocumented = [r for r in RULE_IDS if f"| `{r}` |" not in docs]
    assert not undocumented, f"rules missing from docs/alerts.md's table: {undocumented}"


def test_formats_are_known_only_in_sources() -> None:
    """Outside monitor/sources/ nothing asks which format a run is (`x.format == "..."`):
    what differs by format is a field of sources.FORMATS or a property of its reader."""
    bad = []
    for path in [*monitor_files(), REPO / "app.py"]:
        if "sources" in path.relative_to(REPO).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "format" for s in sides):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, bad


def test_the_trainer_has_no_import_circle() -> None:
    """train.py (the PPO trainer) never imports hf.py (which subclasses it), lazily or not;
    trainer/loop.py, above both, chooses between them."""
    tree = ast.parse((REPO / "trainer" / "train.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert "trainer.hf" not in imported and "trainer.loop" not in imported


# monitor/ itself: what every consumer shares; everything else lives in its layer's package
# (docs/architecture.md, "The data path").
MONITOR_ROOT_MODULES = {
    "__init__.py",
    "__main__.py",
    "cli.py",
    "monitored.py",
    "notify.py",
    "presets.py",
    "run.py",
    "runlog.py",
    "table.py",
    "text.py",
}
MONITOR_PACKAGES = {"alerts", "dashboard", "integrations", "sources"}


def test_monitor_root_holds_only_the_shared_modules_and_the_layer_packages() -> None:
    root = REPO / "monitor"
    modules = {p.name for p in root.glob("*.py")}
    packages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules == MONITOR_ROOT_MODULES, f"a module joined or left monitor/: {modules}"
    assert packages == MONITOR_PACKAGES, f"a package joined or left monitor/: {packages}"


MAX_MODULE_LINES = 750  # "no module over ~700 lines": one sitting's read


def test_no_module_is_too_long_to_read_in_one_sitting() -> None:
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for path in [*monitor_files(), REPO / "app.py"]
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, long
