"""ckptkit inspect and ckptkit resolve: what a checkpoint is and where it lies."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ckptkit.check.inspect import inspect_checkpoint
from ckptkit.cli._common import EXIT_OK, EXIT_PROBLEMS, print_json
from ckptkit.format.sizes import format_size
from ckptkit.resolve.resolve import resolve_ckpt_dir

# -- inspect -----------------------------------------------------------------------------------


def add_inspect(sub: Any) -> None:
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

    info = inspect_checkpoint(args.spec, subfolder=args.subfolder, variant=args.variant)
    if args.json:
        print_json(info.to_dict())
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


def add_resolve(sub: Any) -> None:
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
    parser.add_argument(
        "--cache-dir",
        action="append",
        help="hub cache to download into and look in first; repeat to look in several "
        "(HF_HUB_CACHE and CKPTKIT_CACHE_PATH are searched after them)",
    )
    parser.add_argument("--variant", help="the variant wanted (fp16, bf16, ...)")
    parser.add_argument(
        "--components", help="for a whole pipeline, only these components (comma-separated: transformer,vae)"
    )
    parser.add_argument("--offline", action="store_true", help="never download (like HF_HUB_OFFLINE=1)")
    parser.set_defaults(run=_run_resolve)


def _run_resolve(args: argparse.Namespace) -> int:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt = resolve_ckpt_dir(
            args.spec,
            subfolder=args.subfolder,
            revision=args.revision,
            cache_dir=args.cache_dir[0] if args.cache_dir and len(args.cache_dir) == 1 else args.cache_dir,
            variant=args.variant,
            local_files_only=True if args.offline else None,
            components=[c.strip() for c in args.components.split(",") if c.strip()]
            if args.components
            else None,
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
