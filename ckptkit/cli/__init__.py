"""The ``ckptkit`` command: argument parsing and printing only; the verbs do the work.

Exit codes: 0 ok, 1 problems found (or a ckptkit error), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ckptkit import __version__
from ckptkit.cli._common import EXIT_PROBLEMS, EXIT_USAGE, cli_wording, print_json
from ckptkit.cli.demo import add_demo
from ckptkit.cli.inspect import add_inspect, add_resolve
from ckptkit.cli.plan import add_plan
from ckptkit.cli.save import add_materialize, add_resave
from ckptkit.cli.verify import add_verify
from ckptkit.errors import CkptError

__all__ = ["build_parser", "main"]


COMMANDS: list[Callable[[Any], None]] = [
    add_resolve,
    add_inspect,
    add_verify,
    add_plan,
    add_resave,
    add_materialize,
    add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckptkit",
        description="Make model checkpoint directories boring: resolve, inspect, verify, resave, materialize.",
        epilog="first time? run `ckptkit demo`: a tiny pipeline built, resolved, inspected, loaded, resaved "
        "and verified, offline, in seconds",
    )
    parser.add_argument("--version", action="version", version=f"ckptkit {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    original_add = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return original_add(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except CkptError as exc:
        if args.debug:
            traceback.print_exc()
        message = cli_wording(str(exc))
        if args.json:
            print_json({"ok": False, "error": type(exc).__name__, "message": message})
        print(f"ckptkit {args.command}: {type(exc).__name__}: {message}", file=sys.stderr)
        return EXIT_PROBLEMS
    except (ValueError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ckptkit {args.command}: error: {cli_wording(str(exc))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_PROBLEMS


def _quiet_broken_pipe() -> int:
    """The reader went away (``ckptkit inspect ... | head``): stop quietly, as ``cat`` does."""
    # Point stdout at /dev/null so the interpreter's final flush raises nothing either.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (captured): nothing will flush to the closed pipe
    finally:
        os.close(devnull)
    return EXIT_PROBLEMS
