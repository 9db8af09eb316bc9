"""What every subcommand shares: exit codes, JSON printing, argument types."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ckptkit.format.sizes import parse_size

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value
