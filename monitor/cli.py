"""The one command line: `klwatch` (installed) and `python -m monitor` are this parser.

  klwatch serve [--root DIR ...] [--port N] [--address A] [--poll] [--preset P]
  klwatch check PATH ...    one pass over the runs; exit 0 / 1 (an alert) / 2 (bad input)
  klwatch watch PATH ...    tail the runs, print (or --notify) new alerts
  klwatch train ...         exactly `python -m trainer ...` (needs `klwatch[trainer]`: torch)

The dashboard's own flags (--root, --poll, --follow-symlinks, --preset) are declared once,
in `add_dashboard_arguments`, for `serve` and for app.py (monitor.dashboard.views).

`serve` starts app.py with Streamlit's own CLI and the settings of the shipped
.streamlit/config.toml passed as flags, so the dashboard behaves the same from any directory
(a checkout reads that file only when started from the checkout).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tomllib
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
DEFAULT_PORT = 8501
DEFAULT_ADDRESS = "127.0.0.1"  # reachable from this machine only; --address 0.0.0.0 to share
DEFAULT_ROOT = "runs"  # where `klwatch train` writes, relative to the current directory
TRAINER_HINT = "pip install 'klwatch[trainer]'"
TRAIN_HELP = "train with the reference PPO trainer (python -m trainer; needs klwatch[trainer])"


class ServeError(Exception):
    """The dashboard cannot start as asked: a message on stderr, exit 2."""


# -- where the dashboard is --------------------------------------------------------------------


def dashboard_dir() -> Path:
    """The directory holding app.py and its .streamlit/config.toml and assets/.

    Installed, they are the `klwatch_app` package beside `monitor` (pyproject.toml maps the
    checkout's root files into it, nothing is moved); in a checkout, the checkout's root.
    """
    base = Path(__file__).resolve().parents[1]
    for candidate in (base / "klwatch_app", base):
        if (candidate / "app.py").is_file() and (candidate / ".streamlit/config.toml").is_file():
            return candidate
    raise ServeError(f"the dashboard (app.py) is not installed beside {base / 'monitor'}")


def streamlit_options(config_file: Path, port: int, address: str) -> dict[str, Any]:
    """Every setting of our config.toml as `section.key`, plus the port and address asked for.
    One place says how the dashboard is served: that file (`make run` and `streamlit run
    app.py` from a checkout read it directly)."""
    with config_file.open("rb") as f:
        config = tomllib.load(f)
    options = {
        f"{section}.{key}": value
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
    }
    options["server.port"] = port
    options["server.address"] = address
    return options


def option_flags(options: dict[str, Any]) -> list[str]:
    """`--section.key=value` as Streamlit's CLI takes them (booleans as true/false)."""
    flags = []
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags.append(f"--{key}={text}")
    return flags


def app_args(args: argparse.Namespace, env: Mapping[str, str]) -> list[str]:
    """What app.py reads after `--` (monitor.dashboard.views.parse_app_args). Roots are made
    absolute here, against the directory klwatch was started in. No --root and no KLWATCH_ROOTS:
    ./runs, not the installed package's directory (app.py's own default)."""
    roots = args.root or ([] if env.get("KLWATCH_ROOTS", "").strip() else [DEFAULT_ROOT])
    out: list[str] = []
    for root in roots:
        out += ["--root", os.path.abspath(os.path.expanduser(root))]
    if args.poll:
        out.append("--poll")
    if args.follow_symlinks:
        out.append("--follow-symlinks")
    if args.preset:
        out += ["--preset", args.preset]
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    if args.preset:
        from monitor.presets import PresetError, preset_from_spec

        try:
            preset_from_spec(args.preset, "--preset")  # a typo fails here, not on the page
        except PresetError as e:
            raise ServeError(str(e)) from e
    for root in args.root:
        if not Path(root).expanduser().is_dir():
            print(f"klwatch: warning: --root {root}: no such directory (yet)", file=sys.stderr)
    app_dir = dashboard_dir()
    options = streamlit_options(app_dir / ".streamlit/config.toml", args.port, args.address)
    argv = [
        "run",
        str(app_dir / "app.py"),
        *option_flags(options),
        "--",
        *app_args(args, os.environ),
    ]
    from streamlit.web import cli as streamlit_cli

    # Streamlit's own CLI (config, signals, server): `streamlit run app.py --flags -- args`.
    try:
        streamlit_cli.main(args=argv, prog_name="klwatch serve", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    return 0


# -- check, watch, train -----------------------------------------------------------------------


def cmd_train(argv: list[str]) -> int:
    try:
        import torch  # noqa: F401  (the trainer's one heavy dependency; not in the base install)
    except ImportError as e:
        print(
            f"klwatch train needs PyTorch, which the base install leaves out ({e}).\n"
            f"Install the trainer's dependencies with:  {TRAINER_HINT}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # Exactly `python -m trainer ARGS` (its own exit path included, which torchrun needs).
    sys.argv = ["python -m trainer", *argv]
    runpy.run_module("trainer", run_name="__main__", alter_sys=True)
    return 0


# -- entry point -------------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("klwatch")
    except metadata.PackageNotFoundError:
        return "(not installed: a checkout)"


def add_dashboard_arguments(parser: argparse.ArgumentParser, *, help_text: bool = True) -> None:
    """The dashboard's flags, for `klwatch serve` and for app.py (which Streamlit starts with
    them after `--`): declared here once."""

    def say(text: str) -> str | None:
        return text if help_text else argparse.SUPPRESS

    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DIR|URL",
        help=say(
            "directory (or s3://, gs:// URL) holding runs; repeatable; default: "
            "$KLWATCH_ROOTS, else ./runs"
        ),
    )
    parser.add_argument(
        "--poll", action="store_true", help=say("poll the disk (network filesystems)")
    )
    parser.add_argument(
        "--follow-symlinks", action="store_true", help=say("follow symlinks that leave a root")
    )
    parser.add_argument(
        "--preset",
        metavar="NAME|FILE",
        help=say("how to read the trainers' metric names (default: detected per run)"),
    )


def build_parser() -> argparse.ArgumentParser:
    from monitor.__main__ import add_check_arguments, add_watch_arguments

    parser = argparse.ArgumentParser(
        prog="klwatch",
        description="klwatch: see the KL leash of your RLHF run, live.",
        epilog="`klwatch COMMAND --help` shows a command's options. `python -m monitor` is "
        "the same command.",
    )
    parser.add_argument("--version", action="version", version=f"klwatch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="the dashboard (Streamlit) on http://127.0.0.1:8501",
        description="Serve the klwatch dashboard. Bound to 127.0.0.1 unless --address says "
        "otherwise; see docs/deploy.md before serving it to a team.",
    )
    add_dashboard_arguments(serve)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    serve.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help="interface to listen on (default: %(default)s, this machine only)",
    )
    add_check_arguments(
        sub.add_parser("check", help="check runs once; exit 1 if an alert reaches --fail-on")
    )
    add_watch_arguments(
        sub.add_parser("watch", help="tail runs and print (or --notify) new alerts as they appear")
    )
    sub.add_parser("train", help=TRAIN_HELP, add_help=False)  # its own parser owns its options
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (2) and --help (0) as a return value
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command in ("check", "watch"):
        from monitor.__main__ import run_command

        return run_command(args)
    try:
        return cmd_serve(args)
    except ServeError as e:
        print(f"klwatch: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
