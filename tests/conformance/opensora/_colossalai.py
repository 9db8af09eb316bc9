# ruff: noqa
# fmt: off
# Copyright 2021- HPC-AI Technology Inc. Licensed under the Apache License, Version 2.0; see
# https://github.com/hpcaitech/ColossalAI/blob/4f9953be335ef371b3848719ddafe596c01ecd37/LICENSE
#
# What Open-Sora's loaders use of ColossalAI, which does not install on a CPU-only machine: the
# model-loading path of colossalai/checkpoint_io (checkpoint_io_base.CheckpointIO.load_model,
# general_checkpoint_io.GeneralCheckpointIO.load_unsharded_model / load_sharded_model, and
# utils.has_index_file / load_state_dict / load_state_dict_into_model) at commit
# 4f9953be335ef371b3848719ddafe596c01ecd37, copied with the parts that cannot apply here removed:
# dtensor checks, PEFT wrappers, pinned memory (low_cpu_mem_mode=False), thread pools. The index
# file is read as CheckpointIndexFile does (the shard files named in "weight_map", beside the index).
# The index pattern is made a raw string (same pattern, no invalid-escape warning).
# Open-Sora's get_logger / log_message are stood in for by the standard logging module.
import json
import logging
import re
from collections import OrderedDict
from functools import reduce
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

SAFE_WEIGHTS_NAME = "model.safetensors"
WEIGHTS_NAME = "pytorch_model.bin"


def get_logger():
    return logging.getLogger("opensora")


def log_message(*args, level="info", **kwargs):
    getattr(logging.getLogger("opensora"), level)(*args, **kwargs)


def has_index_file(checkpoint_path: str) -> Tuple[bool, Optional[Path]]:
    checkpoint_path = Path(checkpoint_path)
    if checkpoint_path.is_file():
        # check if it is .index.json
        reg = re.compile(r"(.*?).index((\..*)?).json")
        if reg.fullmatch(checkpoint_path.name) is not None:
            return True, checkpoint_path
        else:
            return False, None
    elif checkpoint_path.is_dir():
        # check if there is only one a file ending with .index.json in this directory
        index_files = list(checkpoint_path.glob("*.index.*json"))

        # if we found a .index.json file, make sure there is only one
        if len(index_files) > 0:
            assert (
                len(index_files) == 1
            ), f"Expected to find one .index.json file in {checkpoint_path}, but found {len(index_files)}"

        if len(index_files) == 1:
            return True, index_files[0]
        else:
            return False, None
    else:
        raise RuntimeError(f"Invalid checkpoint path {checkpoint_path}. Expected a file or a directory.")


def load_state_dict(checkpoint_file_path: Path):
    if str(checkpoint_file_path).endswith(".safetensors"):
        # load with safetensors
        from safetensors import safe_open

        state_dict = {}
        with safe_open(checkpoint_file_path, framework="pt", device="cpu") as f:
            for k in f.keys():
                state_dict[k] = f.get_tensor(k)
        return state_dict
    else:
        # load with torch
        return torch.load(checkpoint_file_path, map_location=torch.device("cpu"))


def load_state_dict_into_model(
    model: nn.Module, state_dict: torch.Tensor, missing_keys: List, strict: bool = False, load_sub_module: bool = True
):
    if not isinstance(state_dict, Mapping):
        raise TypeError("Expected state_dict to be dict-like, got {}.".format(type(state_dict)))

    unexpected_keys: List[str] = []
    sub_missing_keys: List[str] = []
    error_msgs: List[str] = []

    # copy state_dict so _load_from_state_dict can modify it
    metadata = getattr(state_dict, "_metadata", None)
    state_dict = OrderedDict(state_dict)
    if metadata is not None:
        state_dict._metadata = metadata

    def load(module: nn.Module, state_dict, prefix="", load_sub_module: bool = True):
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        args = (state_dict, prefix, local_metadata, True, sub_missing_keys, unexpected_keys, error_msgs)
        # Parameters of module and children will start with prefix. We can exit early if there are none in this
        # state_dict
        if strict or len([key for key in state_dict if key.startswith(prefix)]) > 0:
            module._load_from_state_dict(*args)
        if load_sub_module:
            for name, child in module._modules.items():
                if child is not None:
                    load(child, state_dict, prefix + name + ".")

    load(model, state_dict, "", load_sub_module)
    del load

    missing_keys = missing_keys.append(sub_missing_keys)

    if strict:
        if len(unexpected_keys) > 0:
            error_msgs = [
                "Unexpected key(s) in state_dict: {}. ".format(", ".join('"{}"'.format(k) for k in unexpected_keys))
            ]
            raise RuntimeError(
                "Error(s) in loading state_dict for {}:\n\t{}".format(model.__class__.__name__, "\n\t".join(error_msgs))
            )


class GeneralCheckpointIO:
    def load_model(self, model, checkpoint: str, strict: bool = True):
        index_file_exists, index_file_path = has_index_file(checkpoint)
        if index_file_exists:
            self.load_sharded_model(model, index_file_path, strict)
        else:
            path = Path(checkpoint, SAFE_WEIGHTS_NAME)
            if path.is_file():
                self.load_unsharded_model(model, str(path), strict)
            else:
                path = Path(checkpoint, WEIGHTS_NAME)
                if path.is_file():
                    self.load_unsharded_model(model, str(path), strict)
                else:
                    self.load_unsharded_model(model, checkpoint, strict)
        return model

    def load_unsharded_model(self, model: nn.Module, checkpoint: str, strict: bool):
        checkpoint = load_state_dict(checkpoint)
        model.load_state_dict(checkpoint, strict=strict)

    def load_sharded_model(self, model: nn.Module, checkpoint_index_file: Path, strict: bool = False):
        index = json.loads(Path(checkpoint_index_file).read_text())
        checkpoint_files = sorted({str(Path(checkpoint_index_file).parent / f) for f in index["weight_map"].values()})
        missing_keys = []

        for shard_file in checkpoint_files:
            state_dict = load_state_dict(shard_file)
            load_state_dict_into_model(model, state_dict, missing_keys, strict, True)

        if strict:
            remain_keys = reduce(lambda a, b: a & b, map(set, missing_keys))
            if len(remain_keys) > 0:
                error_msgs = [
                    "Missing key(s) in state_dict: {}. ".format(", ".join('"{}"'.format(k) for k in remain_keys))
                ]
                raise RuntimeError(
                    "Error(s) in loading state_dict for {}:\n\t{}".format(
                        self.__class__.__name__, "\n\t".join(error_msgs)
                    )
                )
