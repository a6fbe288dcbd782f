"""`klwatch` (monitor/cli.py) without installing it: the parts that need no wheel.
tests/test_packaging.py runs the same commands from a fresh install."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from monitor import cli

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "check", "watch", "train"):
        assert command in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_check_is_python_m_monitor_check(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", str(REPO / "sample_runs" / "fixed-beta")])
    out = capsys.readouterr().out
    assert code == 1
    assert "kl_high" in out


def test_check_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["check", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_serve_passes_every_setting_of_the_shipped_config() -> None:
    """One owner for how the dashboard is served: .streamlit/config.toml."""
    app_dir = cli.dashboard_dir()
    assert app_dir == REPO  # a checkout: the files stay where `streamlit run app.py` wants them
    options = cli.streamlit_options(app_dir / ".streamlit/config.toml", 9000, "127.0.0.1")
    assert options["server.headless"] is True
    assert options["browser.gatherUsageStats"] is False
    assert options["server.fileWatcherType"] == "none"
    assert options["runner.postScriptGC"] is False
    assert options["client.toolbarMode"] == "minimal"
    assert options["server.port"] == 9000
    assert options["server.address"] == "127.0.0.1"
    flags = cli.option_flags(options)
    assert "--server.headless=true" in flags
    assert "--runner.postScriptGC=false" in flags
    assert "--server.port=9000" in flags


def test_serve_binds_to_localhost_unless_told_otherwise() -> None:
    args = cli.build_parser().parse_args(["serve"])
    assert (args.address, args.port) == ("127.0.0.1", 8501)
    args = cli.build_parser().parse_args(["serve", "--address", "0.0.0.0", "--port", "80"])
    assert (args.address, args.port) == ("0.0.0.0", 80)


def test_serve_roots_are_absolute_and_default_to_runs(tmp_path: Path) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["serve"])
    assert cli.app_args(args, {}) == ["--root", os.path.abspath("runs")]
    # KLWATCH_ROOTS is read by app.py itself: no --root then.
    assert cli.app_args(args, {"KLWATCH_ROOTS": str(tmp_path)}) == []
    args = parser.parse_args(
        ["serve", "--root", "a", "--root", str(tmp_path), "--poll", "--preset", "trl_grpo"]
    )
    assert cli.app_args(args, {}) == [
        "--root",
        os.path.abspath("a"),
        "--root",
        str(tmp_path),
        "--poll",
        "--preset",
        "trl_grpo",
    ]


def test_serve_unknown_preset_exits_2_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["serve", "--preset", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("klwatch: ") and "no-such-preset" in err


def test_train_without_torch_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert cli.main(["train", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'klwatch[trainer]'" in err
    assert "Traceback" not in err


def test_python_m_monitor_and_klwatch_are_one_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """Same subcommands, same options, same defaults: `python -m monitor` is `klwatch`."""
    import monitor.__main__ as module_main
    from monitor import cli

    for argv in (["--help"], ["check", "--help"], ["watch", "--help"], ["serve", "--help"]):
        assert cli.main(argv) == 0
        via_klwatch = capsys.readouterr().out
        assert module_main.main(argv) == 0
        assert capsys.readouterr().out == via_klwatch, argv
    choices = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == {"serve", "check", "watch", "train"}


def test_the_dashboard_flags_are_declared_once() -> None:
    """app.py parses exactly the flags `klwatch serve` declares (monitor.cli)."""
    from monitor import cli
    from monitor.dashboard import views

    serve = cli.build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    dashboard = {a.dest for a in serve._actions} - {"help", "port", "address"}
    config = views.parse_app_args(
        ["--root", "/a", "--poll", "--follow-symlinks", "--preset", "trl_grpo"], {}, ("/d",)
    )
    assert dashboard == {"root", "poll", "follow_symlinks", "preset"}
    assert (config.roots, config.poll, config.follow_symlinks, config.preset) == (
        ("/a",),
        True,
        True,
        "trl_grpo",
    )
