"""ckptkit inspect and ckptkit resolve: what a checkpoint is and where it lies."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ckptkit.cli._common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    add_command,
    add_component_options,
    add_source_options,
    bool_or_none,
    comma_list,
    print_json,
    source_kwargs,
)
from ckptkit.format.display import dtype_text
from ckptkit.format.sizes import format_size

# -- inspect -----------------------------------------------------------------------------------


def add_inspect(sub: Any) -> None:
    parser = add_command(
        sub,
        "inspect",
        help="what a checkpoint holds: components, weight sets, parameters, dtypes, variants, problems",
        description="Describe a checkpoint from its headers alone (torch is not imported): a summary "
        "per component, then problems; every file with --files.",
        examples=[
            "ckptkit inspect ./pixart/transformer",
            "ckptkit inspect ./pixart --files",
            "ckptkit inspect ./pixart --json",
        ],
    )
    parser.add_argument("spec", help="a checkpoint directory, weights file, hub cache folder or repo id")
    add_component_options(parser, variant="the variant a load would ask for (fp16, ...)")
    parser.add_argument("--files", action="store_true", help="also list every file, with sizes and links")
    add_source_options(parser)
    parser.set_defaults(run=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    # Imported when the subcommand runs (see cli._common): keeps the torch-free command to its verb.
    from ckptkit.check.inspect import inspect_checkpoint

    info = inspect_checkpoint(
        args.spec, subfolder=args.subfolder, variant=args.variant, **source_kwargs(args)
    )
    if args.json:
        print_json(info.to_dict())
    else:
        _print_info(info, files=args.files)
    return EXIT_OK if info.ok else EXIT_PROBLEMS


def _print_info(info: Any, *, files: bool) -> None:
    print(info.path)
    if info.components:
        width = max(len(name) for name in info.components)
        for name, component in info.components.items():
            classes = ".".join(c for c in info.component_classes.get(name) or [] if c)
            print(f"  {name:<{width}}  {classes or '-'}")
            _print_summary(component, "  " + " " * width + "  ")
    if info.weight_sets or not info.components:
        _print_summary(info, "  ")
    if files:
        _print_files(info, "  ")
    else:
        total = sum(f.size or 0 for f in info.files)
        print(f"  {len(info.files)} files ({format_size(total)}); list them with --files")
    problems = list(info.problems) + [p for c in info.components.values() for p in c.problems]
    for problem in problems:
        print(f"  {problem.severity.upper()}: {problem.message}")


def _print_summary(info: Any, indent: str) -> None:
    if info.selected is None:
        print(f"{indent}no weights" + (f" (variants: {', '.join(info.variants)})" if info.variants else ""))
        return
    line = f"{indent}* {info.selected}"
    if info.parameter_count is not None:
        line += f"  {info.parameter_count:,} parameters  {format_size(info.total_bytes or 0)}"
        line += f"  ({dtype_text(info.bytes_by_dtype)})"
    print(line)
    others = [w for w in info.weight_sets if not w.selected]
    if len(info.variants) > 1 or others:
        print(
            f"{indent}variants: {', '.join(info.variants)}"
            + (f"; also here: {', '.join(w.label for w in others)}" if others else "")
        )
    for weight_set in info.weight_sets:
        if weight_set.missing:
            print(f"{indent}{weight_set.label}: MISSING {', '.join(weight_set.missing)}")


def _print_files(info: Any, indent: str) -> None:
    for entry in info.files:
        link = f" -> {entry.link_target}" if entry.link_target else ""
        flag = "  [outside checkpoint]" if entry.outside_root else ""
        size = format_size(entry.size) if entry.size is not None else "missing"
        print(f"{indent}{size:>11}  {entry.name}{link}{flag}")


# -- resolve -----------------------------------------------------------------------------------


def add_resolve(sub: Any) -> None:
    parser = add_command(
        sub,
        "resolve",
        help="print the local directory that holds a checkpoint (downloading only what it needs)",
        description="Resolve a path, hub cache folder, snapshot or repo id to one local directory; "
        'prints only that directory, so it can be used as --ckpt_dir "$(ckptkit resolve ...)".',
        examples=[
            "ckptkit resolve PixArt-alpha/PixArt-XL-2-1024-MS --subfolder vae",
            "ckptkit resolve org/name --variant fp16 --offline --json",
        ],
    )
    parser.add_argument(
        "spec", help="a directory, weights file, models--org--name folder, snapshot or repo id"
    )
    add_component_options(parser, variant="the variant wanted (fp16, bf16, ...)")
    parser.add_argument("--revision", help="branch, tag or commit (hub forms)")
    parser.add_argument(
        "--cache-dir",
        action="append",
        help="hub cache to download into and look in first; repeat to look in several "
        "(HF_HUB_CACHE and CKPTKIT_CACHE_PATH are searched after them)",
    )
    parser.add_argument(
        "--components", help="for a whole pipeline, only these components (comma-separated: transformer,vae)"
    )
    parser.add_argument("--offline", action="store_true", help="never download (like HF_HUB_OFFLINE=1)")
    parser.add_argument(
        "--variant-fallback",
        choices=["warn", "allow", "error"],
        default="warn",
        help="when --variant is missing: load the default weights with a warning (default), silently, or fail",
    )
    parser.add_argument(
        "--weights-name", help="only consider weights of this name (model, diffusion_pytorch_model)"
    )
    parser.add_argument(
        "--allow-pattern",
        action="append",
        metavar="GLOB",
        help="download these files instead of the computed minimum (repeatable; hub forms)",
    )
    parser.add_argument("--endpoint", help="the Hub to download from (default: HF_ENDPOINT)")
    parser.add_argument("--token", help="hub token (default: HF_TOKEN or the stored `hf auth login`)")
    parser.add_argument(
        "--confine", action="store_true", help="refuse weights whose real path lies outside the checkpoint"
    )
    parser.set_defaults(run=_run_resolve)


def _run_resolve(args: argparse.Namespace) -> int:
    import warnings

    # Imported when the subcommand runs (see cli._common): keeps the torch-free command to its verb.
    from ckptkit.resolve.resolve import resolve_ckpt_dir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt = resolve_ckpt_dir(
            args.spec,
            subfolder=args.subfolder,
            revision=args.revision,
            cache_dir=args.cache_dir[0] if args.cache_dir and len(args.cache_dir) == 1 else args.cache_dir,
            variant=args.variant,
            local_files_only=True if args.offline else None,
            variant_fallback=args.variant_fallback,
            weights_name=args.weights_name,
            allow_patterns=args.allow_pattern,
            endpoint=args.endpoint,
            token=args.token,
            confine=bool_or_none(args.confine),
            components=comma_list(args.components),
        )
    for warning in caught:
        print(f"ckptkit resolve: warning: {warning.message}", file=sys.stderr)
    if args.json:
        print_json(
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
                "cache_dir": str(ckpt.cache_dir) if ckpt.cache_dir else None,
                "components": {
                    name: {
                        "path": str(part.path),
                        "variant": part.variant,
                        "format": part.format,
                        "weight_files": [str(p) for p in part.weight_files],
                    }
                    for name, part in ckpt.components.items()
                },
                "warnings": [str(w.message) for w in caught],
            }
        )
    else:
        print(ckpt.path)
    return EXIT_OK
