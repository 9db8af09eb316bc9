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
    if info.selected and info.tensor_count is not None:
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


# -- resolve -----------------------------------------------------------------------------------


def _add_resolve(sub: Any) -> None:
    parser = sub.add_parser(
        "resolve",
        help="print the local directory that holds a checkpoint (downloading only what it needs)",
        description="Resolve a path, hub cache folder, snapshot or repo id to one local directory; "
        'prints only that directory, so it can be used as --ckpt_dir "$(ckptkit resolve ...)".',
        epilog="examples:\n  ckptkit resolve PixArt-alpha/PixArt-XL-2-1024-MS --subfolder vae\n"
        "  ckptkit resolve org/name --variant fp16 --offline --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "spec", help="a directory, weights file, models--org--name folder, snapshot or repo id"
    )
    parser.add_argument("--subfolder", help="component of a pipeline (vae, transformer, text_encoder, ...)")
    parser.add_argument("--revision", help="branch, tag or commit (hub forms)")
    parser.add_argument("--cache-dir", help="hub cache (default: HF_HUB_CACHE or $HF_HOME/hub)")
    parser.add_argument("--variant", help="the variant wanted (fp16, bf16, ...)")
    parser.add_argument("--offline", action="store_true", help="never download (like HF_HUB_OFFLINE=1)")
    parser.set_defaults(run=_run_resolve)


def _run_resolve(args: argparse.Namespace) -> int:
    import warnings

    from ckptkit.resolve import resolve_ckpt_dir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt = resolve_ckpt_dir(
            args.spec,
            subfolder=args.subfolder,
            revision=args.revision,
            cache_dir=args.cache_dir,
            variant=args.variant,
            local_files_only=True if args.offline else None,
        )
    for warning in caught:
        print(f"ckptkit resolve: warning: {warning.message}", file=sys.stderr)
    if args.json:
        _print_json(
            {
                "ok": True,
                "path": str(ckpt.path),
                "repo_id": ckpt.repo_id,
                "revision": ckpt.revision,
                "subfolder": ckpt.subfolder,
                "variant": ckpt.variant,
                "format": ckpt.format,
                "index_file": str(ckpt.index_file) if ckpt.index_file else None,
                "weight_files": [str(p) for p in ckpt.weight_files],
                "warnings": [str(w.message) for w in caught],
            }
        )
    else:
        print(ckpt.path)
    return EXIT_OK


# -- verify ------------------------------------------------------------------------------------


def _add_verify(sub: Any) -> None:
    parser = sub.add_parser(
        "verify",
        help="check structure and content (hub blob hashes, download metadata, SHA256SUMS), offline",
        description=(
            "Check a checkpoint offline: every structural rule of the format core for every weight set, "
            "then file contents against the hub cache blob names (sha256 / git sha1), the download "
            "metadata of snapshot_download(local_dir=...), and SHA256SUMS manifests. "
            "Exit 0 when nothing is wrong, 1 when a problem is found (one line each, naming the file)."
        ),
        epilog=(
            "examples:\n"
            "  ckptkit verify ~/.cache/huggingface/hub/models--org--name/snapshots/<commit>\n"
            "  ckptkit verify ./pixart --no-checksums         # structure only, in milliseconds\n"
            "  ckptkit verify ./pixart --write-manifest       # then copy it anywhere and verify again\n"
            "  ckptkit verify ./pixart/transformer --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "spec",
        help="a checkpoint directory, weights file, hub snapshot or hub cache folder (models--org--name)",
    )
    parser.add_argument("--subfolder", help="component of a pipeline (vae, transformer, ...)")
    parser.add_argument("--variant", help="the variant a load would ask for (fp16, ...)")
    parser.add_argument("--revision", help="for a hub cache folder: the ref or commit (default main)")
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
    parser.set_defaults(run=_run_verify)


_MANIFEST = "SHA256SUMS"


def _run_verify(args: argparse.Namespace) -> int:
    from ckptkit.verify import verify_checkpoint

    report = verify_checkpoint(
        args.spec,
        checksums=args.checksums,
        subfolder=args.subfolder,
        variant=args.variant,
        revision=args.revision,
        confine=True if args.confine else None,
        write_manifest=args.write_manifest,
        progress=None if sys.stderr.isatty() else False,
    )
    if args.json:
        _print_json(report.to_dict())
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


# -- plan --------------------------------------------------------------------------------------


def _size_argument(text: str) -> int:
    from ckptkit.format.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _add_plan(sub: Any) -> None:
    parser = sub.add_parser(
        "plan",
        help="per-device memory for the weights (replicate / FSDP / offload), from headers alone",
        description=(
            "Estimate per-device memory for a checkpoint's weights from its safetensors headers (no "
            "weights are read, torch is not imported): resident weights, the FSDP shard per device, "
            "the unshard peak of the largest wrapped block (blocks.N. / layers.N. / "
            "transformer_blocks.N.), whether it fits and the headroom left for activations. "
            "Exit 0 when the chosen strategy fits, 1 when it does not."
        ),
        epilog=(
            "examples:\n"
            "  ckptkit plan ./Wan2.1-T2V-14B --devices 5 --device-memory 24GiB --dtype bf16\n"
            "  ckptkit plan ./pixart --subfolder transformer --devices 1 --device-memory 80GB --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", help="a checkpoint directory or weights file")
    parser.add_argument("--devices", type=_positive_int, default=1, help="number of devices (default 1)")
    parser.add_argument("--device-memory", type=_size_argument, help="memory per device: 24GiB, 80GB, bytes")
    parser.add_argument("--dtype", help="dtype on the device (bf16, fp16, fp32); default: as stored")
    parser.add_argument(
        "--strategy",
        choices=["replicate", "fsdp", "offload"],
        help="decides the exit code (default: fsdp for several devices, else replicate)",
    )
    parser.add_argument("--subfolder", help="component of a pipeline (transformer, ...)")
    parser.add_argument("--variant", help="the variant a load would use (fp16, ...)")
    placement = parser.add_argument_group(
        "device map", "print the accelerate device_map a load would use (pass it back as device_map=)"
    )
    placement.add_argument(
        "--device-map",
        nargs="?",
        const="auto",
        choices=["auto", "balanced", "balanced_low_0", "sequential"],
        help="plan a device map instead of per-device totals (default mode: auto)",
    )
    placement.add_argument("--max-memory", help="budgets for --device-map: 0=20GiB,1=20GiB,cpu=64GiB")
    placement.add_argument(
        "--no-split", action="append", metavar="PREFIX", help="keep modules under PREFIX whole (repeatable)"
    )
    parser.set_defaults(run=_run_plan)


def _run_plan_device_map(args: argparse.Namespace) -> int:
    from ckptkit.placement_plan import plan_device_map

    if not args.max_memory:
        raise ValueError("plan --device-map needs --max-memory, e.g. --max-memory 0=20GiB,cpu=64GiB")
    plan = plan_device_map(
        args.spec,
        max_memory=args.max_memory,
        device_map=args.device_map,
        dtype=args.dtype,
        no_split_prefixes=args.no_split,
        subfolder=args.subfolder,
        variant=args.variant,
    )
    if args.json:
        _print_json(plan.to_dict())
    else:
        print(plan.format())
    return EXIT_OK


def _run_plan(args: argparse.Namespace) -> int:
    from ckptkit.plan import plan_memory

    if args.device_map:
        return _run_plan_device_map(args)
    if args.device_memory is None:
        raise ValueError("plan needs --device-memory (or --device-map with --max-memory)")

    plan = plan_memory(
        args.spec,
        devices=args.devices,
        device_memory=args.device_memory,
        dtype=args.dtype,
        strategy=args.strategy,
        subfolder=args.subfolder,
        variant=args.variant,
    )
    if args.json:
        _print_json(plan.to_dict())
        return EXIT_OK if plan.fits else EXIT_PROBLEMS
    block = plan.largest_block
    print(f"{plan.path}")
    print(
        f"  weights {format_size(plan.weights_bytes)} ({plan.parameter_count:,} parameters, "
        f"{plan.dtype or 'stored dtypes'}); {len(plan.blocks)} blocks, largest "
        + (f"{block.name} {format_size(block.bytes)}" if block else "none found")
        + f"; outside blocks {format_size(plan.other_bytes)}"
    )
    print(f"  {plan.devices} x {format_size(plan.device_memory)}")
    print(
        f"    {'strategy':<11} {'resident':>11} {'+ unshard':>11} {'= peak':>11} {'host':>11} {'headroom':>12}  fits"
    )
    for estimate in plan.estimates.values():
        mark = "*" if estimate.strategy == plan.strategy else " "
        headroom = ("-" if estimate.headroom_bytes < 0 else "") + format_size(abs(estimate.headroom_bytes))
        print(
            f"  {mark} {estimate.strategy:<11} {format_size(estimate.resident_bytes):>11} "
            f"{format_size(estimate.unshard_bytes):>11} {format_size(estimate.peak_bytes):>11} "
            f"{format_size(estimate.host_bytes):>11} {headroom:>12}  {'yes' if estimate.fits else 'NO'}"
        )
    verdict = "fits" if plan.fits else "does NOT fit"
    print(
        f"  {plan.strategy} {verdict}; activations, optimizer state and the CUDA context come out of the headroom"
    )
    return EXIT_OK if plan.fits else EXIT_PROBLEMS


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

COMMANDS: list[Callable[[Any], None]] = [
    _add_resolve,
    _add_inspect,
    _add_verify,
    _add_plan,
    _add_resave,
    _add_materialize,
]


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
