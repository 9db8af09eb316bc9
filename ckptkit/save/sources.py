"""What a resave reads: every tensor of a weight set as a :class:`PlannedTensor`.

safetensors tensors whose dtype stays are planned as byte ranges of their file, so the writer
copies them file-to-file without decoding; tensors to convert are read one at a time
(:func:`ckptkit.io.tensors.read_tensor`) when the writer reaches them. torch files are opened with
``mmap=True`` (file-backed, nothing read until written) and ``weights_only=True``.

torch is imported only when needed (a dtype change or a torch file): a plain safetensors re-shard
runs without it, which saves its import time and ~100 MiB of memory.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckptkit.errors import CkptWarning, CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.dtypes import DTYPES, canonical_dtype
from ckptkit.format.safe_files import open_regular
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo, read_header
from ckptkit.format.validate import check_weight_set
from ckptkit.io.writer import PlannedTensor

if TYPE_CHECKING:
    import torch

__all__ = ["code_of", "plan_source_tensors", "tensor_bytes"]

_CODE_OF_NAME = {info.name: code for code, info in DTYPES.items()}
# Scale formats and packed sub-byte types are not numbers a cast should touch.
_NOT_CAST = ("F8_E8M0", "F4", "F6_E2M3", "F6_E3M2")


def code_of(dtype: Any, *, name: str = "", path: str | os.PathLike[str] | None = None) -> str:
    """The safetensors code of a torch dtype or dtype name (``torch.bfloat16``/``"bf16"`` -> ``"BF16"``).

    Raises:
        CorruptCheckpointError: safetensors cannot store that dtype.
    """
    text = str(dtype).removeprefix("torch.")
    code = _CODE_OF_NAME.get(text)
    if code is None and not hasattr(dtype, "is_floating_point"):
        code = _CODE_OF_NAME.get(canonical_dtype(text))
    if code is None:
        raise CorruptCheckpointError(
            f"tensor {name!r} has dtype {dtype}, which safetensors cannot store",
            path=path,
            fix="convert that tensor to a supported dtype before resaving",
        )
    return code


def tensor_bytes(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> memoryview:
    """The raw little-endian bytes of ``tensor`` (cast to ``dtype`` when floating), C order."""
    import torch

    tensor = tensor.detach()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    flat = tensor.contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return flat.view(torch.uint8).numpy().data


def _castable(code: str, target: str | None) -> bool:
    info = DTYPES[code]
    return target is not None and info.floating and code not in _NOT_CAST and code != target


@contextlib.contextmanager
def plan_source_tensors(
    ckpt: CheckpointDir,
    *,
    dtype: torch.dtype | str | None = None,
    unwrap: str | bool | None = None,
) -> Iterator[list[PlannedTensor]]:
    """Plan every tensor of ``ckpt``'s weight set, in key order, for :class:`ShardWriter`.

    Key order is the files' order, then the tensors' order in each file (their offsets for
    safetensors, the state dict's order for torch files). Files needed to produce converted
    tensors stay open until the ``with`` block ends.

    Args:
        ckpt: the resolved source.
        dtype: cast floating tensors to this dtype; ``None`` keeps every dtype (bytes are copied).
        unwrap: for torch files, the key a state dict is nested under (see ``unwrap_state_dict``).

    Raises:
        CorruptCheckpointError: headers or index are inconsistent, a key is stored twice, or a
            dtype cannot be stored.
        IncompleteCheckpointError: a shard is missing.

    Example:
        >>> with plan_source_tensors(resolve_ckpt_dir("t5"), dtype="fp16") as tensors:  # doctest: +SKIP
        ...     print(len(tensors), tensors[0].dtype)
    """
    target = code_of(dtype) if dtype is not None else None
    with contextlib.ExitStack() as stack:
        if ckpt.format == "safetensors":
            yield _plan_safetensors(ckpt, target, stack)
        else:
            yield _plan_torch(ckpt, target, unwrap)


def _headers(ckpt: CheckpointDir) -> list[SafetensorsHeader]:
    if ckpt.weight_set is not None:
        check = check_weight_set(ckpt.weight_set)
        check.raise_first()
        for text in check.warnings:
            warnings.warn(text, CkptWarning, stacklevel=5)
        return [check.headers[p] for p in ckpt.weight_files]
    return [read_header(p) for p in ckpt.weight_files]


def _plan_safetensors(
    ckpt: CheckpointDir, target_code: str | None, stack: contextlib.ExitStack
) -> list[PlannedTensor]:
    planned: list[PlannedTensor] = []
    owner: dict[str, Path] = {}
    for header in _headers(ckpt):
        fd: int | None = None
        for info in header.tensors.values():
            _claim(owner, info.name, header.path)
            if _castable(info.dtype, target_code):
                if fd is None:
                    fd = open_regular(header.path, identity=header.identity)
                    stack.callback(os.close, fd)
                planned.append(_converted(fd, header, info, target_code))  # type: ignore[arg-type]
            else:
                planned.append(
                    PlannedTensor(
                        info.name,
                        info.dtype,
                        info.shape,
                        info.nbytes,
                        source_path=header.path,
                        source_offset=header.data_start + info.begin,
                    )
                )
    return planned


def _converted(fd: int, header: SafetensorsHeader, info: TensorInfo, code: str) -> PlannedTensor:
    # keeps torch out of the torch-free path: only a dtype conversion needs it
    from ckptkit.io.tensors import read_tensor, to_torch_dtype

    target = to_torch_dtype(code)
    nbytes = DTYPES[code].nbytes(info.numel)
    assert nbytes is not None
    return PlannedTensor(
        info.name,
        code,
        info.shape,
        nbytes,
        produce=lambda: tensor_bytes(read_tensor(fd, header, info, dtype=target)),
    )


def _claim(owner: dict[str, Path], name: str, path: Path) -> None:
    if name in owner:
        raise CorruptCheckpointError(
            f"tensor {name!r} is stored in two files: {owner[name].name} and {path.name}",
            path=path,
            fix="remove the stale file, or resave from a directory holding one copy of each tensor",
        )
    owner[name] = path


def _plan_torch(ckpt: CheckpointDir, target: str | None, unwrap: str | bool | None) -> list[PlannedTensor]:
    # keeps torch out of the torch-free path: only torch-format sources need it
    from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict

    planned: list[PlannedTensor] = []
    owner: dict[str, Path] = {}
    for path in ckpt.weight_files:
        state = unwrap_state_dict(load_torch_file(path, mmap=True), unwrap, path)
        for name, tensor in state.items():
            _claim(owner, name, path)
            planned.append(_torch_tensor(name, tensor, target, path))
    return planned


def _torch_tensor(name: str, tensor: torch.Tensor, target_code: str | None, path: Path) -> PlannedTensor:
    import torch

    # keeps torch out of the torch-free path: only torch-format sources need it
    from ckptkit.io.tensors import to_torch_dtype

    if tensor.layout != torch.strided or tensor.is_quantized:
        raise CorruptCheckpointError(
            f"tensor {name!r} is {tensor.layout} / quantized; safetensors stores dense tensors only",
            path=path,
            fix="convert it to a dense tensor (tensor.to_dense()) before resaving",
        )
    stored = code_of(tensor.dtype, name=name, path=path)
    cast = to_torch_dtype(target_code) if _castable(stored, target_code) else None
    code = target_code if cast is not None else stored
    assert code is not None
    nbytes = DTYPES[code].nbytes(tensor.numel())
    assert nbytes is not None
    return PlannedTensor(name, code, tuple(tensor.shape), nbytes, produce=lambda: tensor_bytes(tensor, cast))
