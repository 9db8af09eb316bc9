"""What differs between the library versions the suite runs under (``nox -s compat``)."""

from __future__ import annotations

from typing import Any


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """transformers' ``from_pretrained`` dtype argument: ``dtype=`` where configs have a ``dtype``
    field (>= 4.56), else ``torch_dtype=`` (an unknown ``dtype=`` would reach the model's ``__init__``).
    """
    from transformers import PretrainedConfig

    return {"dtype" if "dtype" in vars(PretrainedConfig()) else "torch_dtype": dtype}


def accelerate_balances_without_gpus() -> bool:
    """Whether accelerate's ``get_balanced_memory`` takes GPU budgets on a machine without GPUs.

    Before 1.15 it resolves GPU indices through ``torch.device``, which fails without an accelerator.
    """
    import torch
    from accelerate.utils import get_balanced_memory

    try:
        get_balanced_memory(torch.nn.Linear(2, 2), max_memory={0: 10**6, "cpu": 10**6})
    except RuntimeError:
        return False
    return True
