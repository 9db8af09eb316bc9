"""The ``from_pretrained`` options the adapters take beyond resolution: honoured, or refused by name.

Loading goes through ckptkit, so some options of the libraries' ``from_pretrained`` have nothing
left to do (``resume_download``, ``offload_state_dict``, ...: the result is the same either way)
and are accepted; ``disable_mmap`` is left in the kwargs for the loader (private copies instead of
copy-on-write views of the files); the ones that ask for something ckptkit does not do
(``force_download=True``, ``proxies``, ``ignore_mismatched_sizes=True``, ``weights_only=False``, ...)
raise ``TypeError`` naming them, never pass silently. ``output_loading_info`` is honoured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.index import read_index
from ckptkit.format.safetensors_header import read_header
from ckptkit.io.torch_files import load_torch_file

__all__ = ["LoadingOptions", "pop_loading_options"]

#: Accepted whatever their value: the result of a ckptkit load is the same either way.
NO_EFFECT = frozenset({"resume_download", "offload_state_dict", "_fast_init"})
#: Accepted at the value that asks for what ckptkit does; any other value is refused.
ACCEPTED_VALUES: dict[str, tuple[object, ...]] = {
    "force_download": (False, None),
    "proxies": (None,),
    "mirror": (None,),
    "ignore_mismatched_sizes": (False,),
    "weights_only": (True,),
    "use_safetensors": (None, True),
    "key_mapping": (None,),
}


class LoadingOptions:
    """What the caller asked of the load itself (not of the config): checked, then applied.

    Attributes:
        output_loading_info: return ``(model, info)`` as ``from_pretrained`` does.
        use_safetensors: ``True``: the weights must be safetensors.
    """

    def __init__(self, *, output_loading_info: bool, use_safetensors: bool | None) -> None:
        self.output_loading_info = output_loading_info
        self.use_safetensors = use_safetensors

    def check_format(self, ckpt: CheckpointDir) -> None:
        """``use_safetensors=True`` and the weights found are not safetensors: refuse, as the libraries do.

        Raises:
            CheckpointNotFoundError: no safetensors weights.
        """
        if self.use_safetensors and ckpt.format != "safetensors":
            raise CheckpointNotFoundError(
                "use_safetensors=True, but the weights here are torch files",
                path=ckpt.path,
                fix="convert them (ckptkit resave) or leave use_safetensors unset",
            )

    def result(self, model: torch.nn.Module, ckpt: CheckpointDir, *, as_sets: bool) -> Any:
        """``model``, or ``(model, info)`` with ``missing_keys``/``unexpected_keys``/``mismatched_keys``/``error_msgs``.

        ckptkit refuses missing and mismatched tensors before a model is returned, so those are
        empty; ``unexpected_keys`` are the stored names the model has no place for, less the
        class's ``_keys_to_ignore_on_load_unexpected``. transformers gives sets, diffusers lists.
        """
        if not self.output_loading_info:
            return model
        unexpected = sorted(_unexpected(model, stored_keys(ckpt)))
        info: dict[str, Any] = {
            "missing_keys": set() if as_sets else [],
            "unexpected_keys": set(unexpected) if as_sets else unexpected,
            "mismatched_keys": set() if as_sets else [],
            "error_msgs": [],
        }
        return model, info


def pop_loading_options(kwargs: dict[str, Any], *, caller: str) -> LoadingOptions:
    """Take the load options out of ``kwargs`` (in place); the rest are config overrides.

    Raises:
        TypeError: an option at a value ckptkit cannot honour, named.
    """
    refused = [
        f"{name}={kwargs[name]!r}"
        for name, accepted in ACCEPTED_VALUES.items()
        if name in kwargs and not any(kwargs[name] is value or kwargs[name] == value for value in accepted)
    ]
    if refused:
        raise TypeError(
            f"{caller}() does not support {', '.join(refused)}: ckptkit finds and reads the weights "
            "itself (validated, safetensors or weights_only pickles); call the library's from_pretrained for it"
        )
    use_safetensors = kwargs.pop("use_safetensors", None)
    for name in (*NO_EFFECT, *ACCEPTED_VALUES):
        kwargs.pop(name, None)
    return LoadingOptions(
        output_loading_info=bool(kwargs.pop("output_loading_info", False)), use_safetensors=use_safetensors
    )


def stored_keys(ckpt: CheckpointDir) -> list[str]:
    """The tensor names the selected weights hold (from the index or the headers; torch files are mapped)."""
    weight_set = ckpt.weight_set
    if weight_set is not None and weight_set.index_file is not None:
        return list(read_index(weight_set.index_file).weight_map)
    names: list[str] = []
    for path in ckpt.weight_files:
        if ckpt.format == "safetensors":
            names += list(read_header(path).tensors)
        else:
            names += [str(k) for k in load_torch_file(path, mmap=True)]
    return names


def _unexpected(model: torch.nn.Module, stored: Iterable[str]) -> set[str]:
    own = set(model.state_dict())
    ignore = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()]
    return {k for k in stored if k not in own and not any(p.search(k) for p in ignore)}
