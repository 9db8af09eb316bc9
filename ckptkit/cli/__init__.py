"""The ``ckptkit`` command: argument parsing and printing only; the verbs do the work.

Exit codes: 0 ok, 1 problems found (or a ckptkit error), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ckptkit.cli._common import EXIT_PROBLEMS, EXIT_USAGE, print_json
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
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ckptkit",
        description="Make model checkpoint directories boring: resolve, inspect, verify, resave, materialize.",
    )
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
        return int(args.run(args))
    except CkptError as exc:
        if args.debug:
            traceback.print_exc()
        if args.json:
            print_json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        print(f"ckptkit {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except (ValueError, OSError, OverflowError, RecursionError, UnicodeError) as exc:
        if args.debug:
            traceback.print_exc()
        if args.json:
            print_json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        print(f"ckptkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_PROBLEMS
