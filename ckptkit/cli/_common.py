"""What every subcommand shares: exit codes, JSON printing, argument types, the common options.

A subcommand's module imports its verb inside its ``_run_*`` function, when that subcommand runs:
building the parser (``ckptkit --version``, ``ckptkit --help``) then loads no verb, and a torch-free
command (``inspect``, ``verify``, ``plan``) loads only its own verb, never another's imports.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ckptkit.format.sizes import parse_size

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def add_command(
    sub: Any, name: str, *, help: str, description: str, examples: list[str]
) -> argparse.ArgumentParser:
    """One subcommand's parser: its one-line help, its description and its examples (one a line)."""
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_component_options(parser: argparse.ArgumentParser, *, variant: str) -> None:
    """--subfolder and --variant: which component of a pipeline, which variant (``variant``: its help)."""
    parser.add_argument("--subfolder", help="component of a pipeline (vae, transformer, text_encoder, ...)")
    parser.add_argument("--variant", help=variant)


def comma_list(text: str | None) -> list[str] | None:
    """``--components transformer,vae`` as a list; ``None`` when the flag is absent."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


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


# Python keyword -> the flag that sets it, for rewording errors raised under the CLI.
FLAGS = {
    "variant": "--variant",
    "variant_fallback": "--variant-fallback",
    "subfolder": "--subfolder",
    "revision": "--revision",
    "cache_dir": "--cache-dir",
    "weights_name": "--weights-name",
    "unwrap": "--unwrap",
    "max_shard_size": "--max-shard-size",
    "dtype": "--dtype",
    "overwrite": "--overwrite",
    "confine": "--confine",
    "local_files_only": "--offline",
    "allow_patterns": "--allow-pattern",
    "endpoint": "--endpoint",
    "include": "--include",
    "exclude": "--exclude",
    "archive": "--archive",
    "devices": "--devices",
    "device_memory": "--device-memory",
    "strategy": "--strategy",
    "max_memory": "--max-memory",
    "no_split_prefixes": "--no-split",
    "write_manifest": "--write-manifest",
    "checksums": "--checksums",
}
_KEYWORD = re.compile(
    r"\b("
    + "|".join(sorted(FLAGS, key=len, reverse=True))
    + r")=(None|True|False|'[^']*'|\"[^\"]*\"|[\w.\-]+)?"
)


def cli_wording(text: str) -> str:
    """Rewrite the Python keywords an error message suggests as the CLI flags that set them.

    Example:
        >>> cli_wording("pass unwrap='state_dict', or variant=None")
        'pass --unwrap state_dict, or no --variant'
    """

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        option = FLAGS[name]
        if value in (None, "True"):
            return option
        if value in ("None", "False"):
            return f"no {option}"
        return f"{option} {value.strip(chr(39) + chr(34))}"

    return _KEYWORD.sub(flag, text)


def bool_or_none(flag: bool) -> bool | None:
    """A store_true flag as an option whose absence means "follow the environment"."""
    return True if flag else None


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """--revision, --cache-dir, --offline, --confine: where a hub form is looked for, and how strictly."""
    parser.add_argument("--revision", help="branch, tag or commit (hub forms)")
    parser.add_argument("--cache-dir", help="hub cache (default: HF_HUB_CACHE or $HF_HOME/hub)")
    parser.add_argument("--offline", action="store_true", help="never download (like HF_HUB_OFFLINE=1)")
    parser.add_argument(
        "--confine", action="store_true", help="refuse files whose real path lies outside the checkpoint"
    )


def source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of :func:`add_source_options`, for the verbs."""
    kwargs: dict[str, Any] = {"confine": bool_or_none(args.confine)}
    if args.revision:
        kwargs["revision"] = args.revision
    if args.cache_dir:
        kwargs["cache_dir"] = args.cache_dir
    if args.offline:
        kwargs["local_files_only"] = True
    return kwargs
