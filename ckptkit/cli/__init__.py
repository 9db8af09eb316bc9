"""The ``ckptkit`` command: argument parsing and printing only; the verbs do the work.

Exit codes: 0 ok, 1 problems found (or a ckptkit error), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ckptkit._version import __version__
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
    parser = _Parser(
        prog="ckptkit",
        description="Make model checkpoint directories boring: resolve, inspect, verify, resave, materialize.",
        epilog="first time? run `ckptkit demo`: a tiny pipeline built, resolved, inspected, loaded, resaved "
        "and verified, offline, in seconds",
    )
    parser.add_argument("--version", action="version", version=f"ckptkit {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    original_add = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return original_add(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign, assignment]
    for add in COMMANDS:
        add(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors keep their message, so ``--json`` can print it."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        text = f"{self.prog}: error: {message}"
        print(text, file=sys.stderr)
        raise _UsageExit(text)


class _UsageExit(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    With ``--json``, every failure (bad arguments included) prints one JSON object
    ``{"ok": false, "error": ..., "message": ...}`` on stdout.
    """
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words)
    except _UsageExit as exc:
        if "--json" in words:
            print_json({"ok": False, "error": "UsageError", "message": exc.message})
        return EXIT_USAGE
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except CkptError as exc:
        return _failed(args, exc, f"{type(exc).__name__}: ", EXIT_PROBLEMS)
    except (ValueError, OSError, OverflowError, RecursionError, UnicodeError) as exc:
        return _failed(args, exc, "error: ", EXIT_USAGE if isinstance(exc, ValueError) else EXIT_PROBLEMS)


def _failed(args: argparse.Namespace, exc: Exception, label: str, code: int) -> int:
    """Report an error of the verb: its traceback with --debug, a JSON object with --json, one line."""
    if args.debug:
        traceback.print_exc()
    message = cli_wording(str(exc))
    if args.json:
        print_json({"ok": False, "error": type(exc).__name__, "message": message})
    print(f"ckptkit {args.command}: {label}{message}", file=sys.stderr)
    return code


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
