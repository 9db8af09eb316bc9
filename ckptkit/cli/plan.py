"""ckptkit plan: per-device memory and device maps from headers alone."""

from __future__ import annotations

import argparse
from typing import Any

from ckptkit.cli._common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    add_command,
    add_component_options,
    add_source_options,
    positive_int,
    print_json,
    size_argument,
    source_kwargs,
)
from ckptkit.format.sizes import format_size


def add_plan(sub: Any) -> None:
    parser = add_command(
        sub,
        "plan",
        help="per-device memory for the weights (replicate / FSDP / offload), from headers alone",
        description=(
            "Estimate per-device memory for a checkpoint's weights from its safetensors headers (no "
            "weights are read, torch is not imported): resident weights, the FSDP shard per device, "
            "the unshard peak of the largest wrapped block (blocks.N. / layers.N. / "
            "transformer_blocks.N.), whether it fits and the headroom left for activations. "
            "Exit 0 when the chosen strategy fits, 1 when it does not."
        ),
        examples=[
            "ckptkit plan ./Wan2.1-T2V-14B --devices 5 --device-memory 24GiB --dtype bf16",
            "ckptkit plan ./pixart --subfolder transformer --devices 1 --device-memory 80GB --json",
        ],
    )
    parser.add_argument("spec", help="a checkpoint directory or weights file")
    parser.add_argument("--devices", type=positive_int, default=1, help="number of devices (default 1)")
    parser.add_argument("--device-memory", type=size_argument, help="memory per device: 24GiB, 80GB, bytes")
    parser.add_argument("--dtype", help="dtype on the device (bf16, fp16, fp32); default: as stored")
    parser.add_argument(
        "--strategy",
        choices=["replicate", "fsdp", "offload"],
        help="decides the exit code (default: fsdp for several devices, else replicate; "
        "when that does not fit, the first that does)",
    )
    add_component_options(parser, variant="the variant a load would use (fp16, ...)")
    parser.add_argument(
        "--weights-name", help="plan the weights of this name when a folder holds several (model, ...)"
    )
    add_source_options(parser)
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


def _run_plan(args: argparse.Namespace) -> int:
    # Imported when the subcommand runs (see cli._common): keeps the torch-free command to its verb.
    from ckptkit.placement.device_map import plan_device_map
    from ckptkit.placement.memory import plan_memory  # the same: a torch-free verb, loaded here

    checkpoint: dict[str, Any] = {
        "dtype": args.dtype,
        "subfolder": args.subfolder,
        "variant": args.variant,
        "weights_name": args.weights_name,
        **source_kwargs(args),
    }
    if args.device_map and not args.max_memory:
        raise ValueError("plan --device-map needs --max-memory, e.g. --max-memory 0=20GiB,cpu=64GiB")
    if not args.device_map and args.device_memory is None:
        raise ValueError("plan needs --device-memory (or --device-map with --max-memory)")
    planned: Any = (
        plan_device_map(
            args.spec,
            max_memory=args.max_memory,
            device_map=args.device_map,
            no_split_prefixes=args.no_split,
            **checkpoint,
        )
        if args.device_map
        else plan_memory(
            args.spec,
            devices=args.devices,
            device_memory=args.device_memory,
            strategy=args.strategy,
            **checkpoint,
        )
    )
    code = EXIT_OK if args.device_map or planned.fits else EXIT_PROBLEMS
    if args.json:
        print_json(planned.to_dict())
    elif args.device_map:
        print(planned.format())
    else:
        _print_memory_plan(planned)
    return code


def _print_memory_plan(plan: Any) -> None:
    block = plan.largest_block
    print(f"{plan.path}")
    print(f"  weight set {plan.weight_set}")
    if plan.passed_over:
        print(
            f"  not counted: {', '.join(plan.passed_over)} (other weights here; plan one with "
            "its file path or --weights-name)"
        )
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
        mark = "*" if estimate.strategy == plan.strategy and estimate.fits else " "
        headroom = ("-" if estimate.headroom_bytes < 0 else "") + format_size(abs(estimate.headroom_bytes))
        print(
            f"  {mark} {estimate.strategy:<11} {format_size(estimate.resident_bytes):>11} "
            f"{format_size(estimate.unshard_bytes):>11} {format_size(estimate.peak_bytes):>11} "
            f"{format_size(estimate.host_bytes):>11} {headroom:>12}  {'yes' if estimate.fits else 'NO'}"
        )
    if plan.fits:
        print(
            f"  * {plan.strategy} fits; activations, optimizer state and the CUDA context come out of the headroom"
        )
    else:
        fitting = ", ".join(plan.fitting)
        print(
            f"  {plan.strategy} does NOT fit; "
            + (
                f"fits: {fitting} (--strategy {plan.fitting[0]})"
                if fitting
                else "no strategy fits: more devices or memory"
            )
        )
