"""ckptkit plan: per-device memory and device maps from headers alone."""

from __future__ import annotations

import argparse
from typing import Any

from ckptkit.cli._common import EXIT_OK, EXIT_PROBLEMS, positive_int, print_json, size_argument
from ckptkit.format.sizes import format_size
from ckptkit.placement.device_map import plan_device_map
from ckptkit.placement.memory import plan_memory


def add_plan(sub: Any) -> None:
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
    parser.add_argument("--devices", type=positive_int, default=1, help="number of devices (default 1)")
    parser.add_argument("--device-memory", type=size_argument, help="memory per device: 24GiB, 80GB, bytes")
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
        print_json(plan.to_dict())
    else:
        print(plan.format())
    return EXIT_OK


def _run_plan(args: argparse.Namespace) -> int:

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
        print_json(plan.to_dict())
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
