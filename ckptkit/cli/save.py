"""ckptkit resave and ckptkit materialize: rewriting and copying checkpoints."""

from __future__ import annotations

import argparse
from typing import Any

from ckptkit.cli._common import EXIT_OK, add_command, bool_or_none, comma_list, print_json
from ckptkit.format.sizes import format_size

# -- resave ------------------------------------------------------------------------------------


def add_resave(sub: Any) -> None:
    parser = add_command(
        sub,
        "resave",
        help="rewrite a checkpoint as safetensors shards (or one file), streaming and atomically",
        description="Rewrite a checkpoint as safetensors: re-shard, make one file, convert the dtype, "
        "write a variant. Tensor bytes are copied file-to-file; the output appears atomically.",
        examples=[
            "ckptkit resave ./sdxl/unet ./unet-single --max-shard-size none",
            "ckptkit resave ./t5 ./t5 --variant fp16 --overwrite",
            "ckptkit resave ./pixart ./pixart-bf16 --dtype bf16",
        ],
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
    parser.add_argument(
        "--components", help="resave only these pipeline components (comma-separated: transformer,vae)"
    )
    parser.add_argument(
        "--weights-name",
        help="the name the output files get (model, diffusion_pytorch_model); never filters SRC",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument(
        "--unwrap",
        nargs="?",
        const="auto",
        metavar="KEY",
        help="torch files: the key the state dict is nested under (state_dict, ema); alone: the usual one",
    )
    parser.add_argument(
        "--no-copy-other-files",
        action="store_true",
        help="write the weights only (default: configs, tokenizer files and model_index.json travel too)",
    )
    parser.add_argument(
        "--confine",
        action="store_true",
        help="refuse source files whose real path lies outside the checkpoint",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="skip flushing to disk (faster, less durable)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=_run_resave)


def _run_resave(args: argparse.Namespace) -> int:
    # Imported when the subcommand runs (see cli._common): keeps other commands torch-free of it.
    from ckptkit.save.resave import resave

    size = None if args.max_shard_size.strip().lower() in ("none", "inf") else args.max_shard_size
    ckpt = resave(
        args.src,
        args.dst,
        max_shard_size=size,
        variant=args.variant,
        dtype=args.dtype,
        subfolder=args.subfolder,
        components=comma_list(args.components),
        weights_name=args.weights_name,
        overwrite=args.overwrite,
        fsync=not args.no_fsync,
        progress=False if (args.no_progress or args.json) else None,
        unwrap=True if args.unwrap == "auto" else args.unwrap,
        copy_other_files=not args.no_copy_other_files,
        confine=bool_or_none(args.confine),
    )
    sizes = {str(p): p.stat().st_size for p in ckpt.weight_files}
    if args.json:
        files = [{"path": name, "bytes": size} for name, size in sizes.items()]
        print_json({"ok": True, "path": str(ckpt.path), "variant": ckpt.variant, "files": files})
    else:
        count = len(sizes)
        print(f"{ckpt.path}: {count} file{'s' if count != 1 else ''}, {format_size(sum(sizes.values()))}")
        for name, size in sizes.items():
            print(f"  {format_size(size):>11}  {name}")
    return EXIT_OK


# -- materialize -------------------------------------------------------------------------------


def add_materialize(sub: Any) -> None:
    parser = add_command(
        sub,
        "materialize",
        help="a symlink-free copy of a checkpoint or hub snapshot, or a model.tar.gz",
        description="Copy a checkpoint with every symlink replaced by its file (.cache/ left out), "
        "or write a tarball with the files at its root, as SageMaker expects model.tar.gz.",
        examples=[
            "ckptkit materialize ~/.cache/huggingface/hub/models--org--name ./model",
            "ckptkit materialize ./snapshot model.tar.gz --archive tar.gz",
        ],
    )
    parser.add_argument("src", help="a checkpoint directory, hub snapshot or hub cache repo folder")
    parser.add_argument("dst", help="the output directory, or the archive file with --archive")
    parser.add_argument("--archive", choices=["tar", "tar.gz"], help="write a tarball instead of a directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    choose = parser.add_argument_group("what to ship (default: every file)")
    choose.add_argument(
        "--include", action="append", metavar="GLOB", help="copy only files matching GLOB (repeatable)"
    )
    choose.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="leave out files matching GLOB (repeatable): '*.bin'",
    )
    choose.add_argument(
        "--components", help="copy only these pipeline components (comma-separated: transformer,vae)"
    )
    choose.add_argument(
        "--selected",
        action="store_true",
        help="only the weight set a load picks in each folder (no .bin duplicates, no other variants)",
    )
    choose.add_argument("--variant", help="with --selected: the variant to ship (fp16, ...)")
    parser.add_argument(
        "--no-manifest",
        action="store_true",
        help="do not write SHA256SUMS beside the files (default: write it)",
    )
    parser.add_argument(
        "--compresslevel", type=int, default=1, help="gzip level for tar.gz (default 1: fast)"
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="skip flushing to disk (faster, less durable)"
    )
    parser.add_argument(
        "--confine", action="store_true", help="refuse files whose real path lies outside the checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=_run_materialize)


def _run_materialize(args: argparse.Namespace) -> int:
    # Imported when the subcommand runs (see cli._common): keeps other commands torch-free of it.
    from ckptkit.save.materialize import materialize

    path = materialize(
        args.src,
        args.dst,
        archive=args.archive,
        overwrite=args.overwrite,
        compresslevel=args.compresslevel,
        progress=False if (args.no_progress or args.json) else None,
        fsync=not args.no_fsync,
        confine=bool_or_none(args.confine),
        include=args.include,
        exclude=args.exclude,
        components=comma_list(args.components),
        weight_sets="selected" if args.selected else "all",
        variant=args.variant,
        manifest=not args.no_manifest,
    )
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )
    if args.json:
        print_json({"ok": True, "path": str(path), "bytes": size})
    else:
        print(f"{path}: {format_size(size)}")
    return EXIT_OK
