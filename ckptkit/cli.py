"""The ``ckptkit`` command: argument parsing and printing only; the verbs do the work.

Exit codes: 0 ok, 1 problems found (or a ckptkit error), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ckptkit.errors import CkptError
from ckptkit.format.sizes import format_size

__all__ = ["main"]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


# -- inspect -----------------------------------------------------------------------------------


def _add_inspect(sub: Any) -> None:
    parser = sub.add_parser(
        "inspect",
        help="what a checkpoint holds: files, weight sets, tensors, dtypes, links, problems",
        description="Describe a checkpoint from its headers alone (torch is not imported).",
        epilog="examples:\n  ckptkit inspect ./pixart/transformer\n  ckptkit inspect ./pixart --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", help="a checkpoint directory or weights file")
    parser.add_argument("--subfolder", help="component of a pipeline (vae, transformer, ...)")
    parser.add_argument("--variant", help="the variant a load would ask for (fp16, ...)")
    parser.set_defaults(run=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from ckptkit.inspect import inspect_checkpoint

    info = inspect_checkpoint(args.spec, subfolder=args.subfolder, variant=args.variant)
    if args.json:
        _print_json(info.to_dict())
    else:
        _print_info(info)
    return EXIT_OK if info.ok else EXIT_PROBLEMS


def _print_info(info: Any, indent: str = "") -> None:
    print(f"{indent}{info.path}")
    for weight_set in info.weight_sets:
        mark = "*" if weight_set.selected else " "
        missing = f"  MISSING {len(weight_set.missing)}" if weight_set.missing else ""
        print(f"{indent}  {mark} {weight_set.label:<60} variant={weight_set.variant or 'default'}{missing}")
    if info.selected:
        if info.tensor_count is not None:
            dtypes = ", ".join(f"{code} {format_size(n)}" for code, n in info.bytes_by_dtype.items())
            print(
                f"{indent}  tensors {info.tensor_count:,}  parameters {info.parameter_count:,}  "
                f"bytes {format_size(info.total_bytes or 0)}  ({dtypes})"
            )
    if info.variants:
        print(f"{indent}  variants: {', '.join(info.variants)}")
    total = sum(f.size or 0 for f in info.files)
    print(f"{indent}  files: {len(info.files)} ({format_size(total)})")
    for entry in info.files:
        link = f" -> {entry.link_target}" if entry.link_target else ""
        flag = "  [outside checkpoint]" if entry.outside_root else ""
        size = format_size(entry.size) if entry.size is not None else "missing"
        print(f"{indent}    {size:>11}  {entry.name}{link}{flag}")
    for name, component in info.components.items():
        classes = info.component_classes.get(name) or []
        print(f"{indent}  component {name} ({'.'.join(c for c in classes if c)}):")
        _print_info(component, indent + "    ")
    for problem in info.problems:
        print(f"{indent}  {problem.severity.upper()}: {problem.message}")


# -- resave ------------------------------------------------------------------------------------


def _add_resave(sub: Any) -> None:
    parser = sub.add_parser(
        "resave",
        help="rewrite a checkpoint as safetensors shards (or one file), streaming and atomically",
        description="Rewrite a checkpoint as safetensors: re-shard, make one file, convert the dtype, "
        "write a variant. Tensor bytes are copied file-to-file; the output appears atomically.",
        epilog="examples:\n  ckptkit resave ./sdxl/unet ./unet-single --max-shard-size none\n"
        "  ckptkit resave ./t5 ./t5 --variant fp16 --overwrite\n"
        "  ckptkit resave ./pixart ./pixart-bf16 --dtype bf16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="a checkpoint directory, weights file, pipeline directory or hub form")
    parser.add_argument("dst", help="the output directory (may be SRC itself with --overwrite)")
    parser.add_argument(
        "--max-shard-size",
        default="10GB",
        help="shard size limit (10GB, 500MiB, bytes) or 'none' for one file",
    )
    parser.add_argument("--variant", help="variant to write (and read): fp16, bf16, ...")
    parser.add_argument("--dtype", help="cast floating tensors: fp16, bf16, fp32, ...")
    parser.add_argument("--subfolder", help="component of a pipeline (vae, transformer, ...)")
    parser.add_argument("--weights-name", help="output weights name (model, diffusion_pytorch_model)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument(
        "--no-fsync", action="store_true", help="skip flushing to disk (faster, less durable)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=_run_resave)


def _run_resave(args: argparse.Namespace) -> int:
    from ckptkit.resave import resave

    size = None if args.max_shard_size.strip().lower() in ("none", "inf") else args.max_shard_size
    ckpt = resave(
        args.src,
        args.dst,
        max_shard_size=size,
        variant=args.variant,
        dtype=args.dtype,
        subfolder=args.subfolder,
        weights_name=args.weights_name,
        overwrite=args.overwrite,
        fsync=not args.no_fsync,
        progress=False if (args.no_progress or args.json) else None,
    )
    sizes = {str(p): p.stat().st_size for p in ckpt.weight_files}
    if args.json:
        files = [{"path": name, "bytes": size} for name, size in sizes.items()]
        _print_json({"ok": True, "path": str(ckpt.path), "variant": ckpt.variant, "files": files})
    else:
        count = len(sizes)
        print(f"{ckpt.path}: {count} file{'s' if count != 1 else ''}, {format_size(sum(sizes.values()))}")
        for name, size in sizes.items():
            print(f"  {format_size(size):>11}  {name}")
    return EXIT_OK


# -- materialize -------------------------------------------------------------------------------


def _add_materialize(sub: Any) -> None:
    parser = sub.add_parser(
        "materialize",
        help="a symlink-free copy of a checkpoint or hub snapshot, or a model.tar.gz",
        description="Copy a checkpoint with every symlink replaced by its file (.cache/ left out), "
        "or write a tarball with the files at its root, as SageMaker expects model.tar.gz.",
        epilog="examples:\n  ckptkit materialize ~/.cache/huggingface/hub/models--org--name ./model\n"
        "  ckptkit materialize ./snapshot model.tar.gz --archive tar.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="a checkpoint directory, hub snapshot or hub cache repo folder")
    parser.add_argument("dst", help="the output directory, or the archive file with --archive")
    parser.add_argument("--archive", choices=["tar", "tar.gz"], help="write a tarball instead of a directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=_run_materialize)


def _run_materialize(args: argparse.Namespace) -> int:
    from ckptkit.materialize import materialize

    path = materialize(
        args.src,
        args.dst,
        archive=args.archive,
        overwrite=args.overwrite,
        progress=False if (args.no_progress or args.json) else None,
    )
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )
    if args.json:
        _print_json({"ok": True, "path": str(path), "bytes": size})
    else:
        print(f"{path}: {format_size(size)}")
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------

COMMANDS: list[Callable[[Any], None]] = [_add_inspect, _add_resave, _add_materialize]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckptkit",
        description="Make model checkpoint directories boring: resolve, inspect, verify, resave, materialize.",
    )
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
        return int(args.run(args))
    except CkptError as exc:
        if args.debug:
            traceback.print_exc()
        if args.json:
            _print_json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        print(f"ckptkit {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except (ValueError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ckptkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_PROBLEMS
