"""ckptkit verify: sizes, headers and checksums of every file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ckptkit.cli._common import EXIT_OK, EXIT_PROBLEMS, add_command, add_component_options, print_json
from ckptkit.format.sizes import format_size

# -- verify ------------------------------------------------------------------------------------


def add_verify(sub: Any) -> None:
    parser = add_command(
        sub,
        "verify",
        help="check structure and content (hub blob hashes, download metadata, SHA256SUMS), offline",
        description=(
            "Check a checkpoint offline: every structural rule of the format core for every weight set, "
            "then file contents against the hub cache blob names (sha256 / git sha1), the download "
            "metadata of snapshot_download(local_dir=...), and SHA256SUMS manifests. "
            "Exit 0 when nothing is wrong, 1 when a problem is found (one line each, naming the file)."
        ),
        examples=[
            "ckptkit verify ~/.cache/huggingface/hub/models--org--name/snapshots/<commit>",
            "ckptkit verify ./pixart --no-checksums         # structure only, in milliseconds",
            "ckptkit verify ./pixart --write-manifest       # then copy it anywhere and verify again",
            "ckptkit verify ./pixart/transformer --json",
        ],
    )
    parser.add_argument(
        "spec",
        help="a checkpoint directory, weights file, hub snapshot or hub cache folder (models--org--name)",
    )
    add_component_options(parser, variant="the variant a load would ask for (fp16, ...)")
    parser.add_argument("--revision", help="for a hub cache folder: the ref or commit (default main)")
    parser.add_argument("--cache-dir", help="hub cache for a repo id (default: HF_HUB_CACHE or $HF_HOME/hub)")
    parser.add_argument("--offline", action="store_true", help="never download (like HF_HUB_OFFLINE=1)")
    parser.add_argument(
        "--checksums",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hash file contents (default); --no-checksums checks structure and recorded sizes only",
    )
    parser.add_argument(
        "--write-manifest",
        action="store_true",
        help=f"when nothing is wrong, write {_MANIFEST} (sha256sum format) into the directory",
    )
    parser.add_argument(
        "--confine", action="store_true", help="fail when a link leads outside the checkpoint root"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=_run_verify)


_MANIFEST = "SHA256SUMS"


def _run_verify(args: argparse.Namespace) -> int:
    # Imported when the subcommand runs (see cli._common): keeps the torch-free command to its verb.
    from ckptkit.check.verify import verify_checkpoint

    report = verify_checkpoint(
        args.spec,
        checksums=args.checksums,
        subfolder=args.subfolder,
        variant=args.variant,
        revision=args.revision,
        confine=True if args.confine else None,
        write_manifest=args.write_manifest,
        progress=None if sys.stderr.isatty() and not args.no_progress and not args.json else False,
        **({"cache_dir": args.cache_dir} if args.cache_dir else {}),
        **({"local_files_only": True} if args.offline else {}),
    )
    if args.json:
        print_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    for problem in report.problems:
        print(f"{problem.severity.upper()}: {problem.message}")
    for link in report.outside_links:
        print(f"LINK OUTSIDE ROOT: {link}")
    errors = sum(p.severity == "error" for p in report.problems)
    status = "OK" if report.ok else f"FAILED ({errors} problem{'s' if errors != 1 else ''})"
    if report.checksums:
        content = (
            f"{len(report.verified)} verified by hash, {len(report.unverified)} with no recorded digest, "
            f"{format_size(report.bytes_hashed)} hashed"
        )
    else:
        content = "checksums skipped (structure and sizes only)"
    print(f"{status}: {report.path}: {len(report.files)} files, {content}, in {report.seconds:.2f} s")
    if report.manifest_written:
        print(f"wrote {report.manifest_written}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS
