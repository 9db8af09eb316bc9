"""What differs between the library versions the suite runs under (``nox -s compat``)."""

from __future__ import annotations

from typing import Any


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """transformers' ``from_pretrained`` dtype argument: ``dtype=`` where configs have a ``dtype``
    field (>= 4.56), else ``torch_dtype=`` (an unknown ``dtype=`` would reach the model's ``__init__``).
    """
    from transformers import PretrainedConfig

    return {"dtype" if "dtype" in vars(PretrainedConfig()) else "torch_dtype": dtype}


def private_memory_kwarg() -> dict[str, Any]:
    """transformers' ``from_pretrained`` argument for weights in private memory: ``disable_mmap=True``
    where it takes one (5.x); 4.x has none (an unknown one would reach the model's ``__init__``).
    """
    import inspect

    from transformers import PreTrainedModel

    has = "disable_mmap" in inspect.signature(PreTrainedModel.from_pretrained).parameters
    return {"disable_mmap": True} if has else {}


def accelerate_balances_without_gpus() -> bool:
    """Whether accelerate's ``get_balanced_memory`` takes GPU budgets on a machine without GPUs.

    Older versions (1.6 at least; not 1.15) resolve GPU indices through ``torch.device``, which fails without an accelerator.
    """
    import torch
    from accelerate.utils import get_balanced_memory

    try:
        get_balanced_memory(torch.nn.Linear(2, 2), max_memory={0: 10**6, "cpu": 10**6})
    except RuntimeError:
        return False
    return True


def diffusers_class(name: str) -> type:
    """diffusers' model class ``name``; the test is skipped where the installed diffusers has none.

    The LTX-Video classes came in diffusers 0.32, the Wan ones in 0.33; the suite also runs on 0.31.
    """
    import diffusers
    import pytest

    cls = getattr(diffusers, name, None)
    if cls is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {name}", allow_module_level=True)
    return cls


def has_diffusers_classes(*names: str) -> bool:
    import diffusers

    return all(hasattr(diffusers, name) for name in names)


class Layouts(dict):
    """Layout name -> directory; a layout not built here (``unbuilt``: name -> why) skips the test."""

    def __init__(self) -> None:
        super().__init__()
        self.unbuilt: dict[str, str] = {}

    def __missing__(self, key: str) -> Any:
        import pytest

        if key in self.unbuilt:
            pytest.skip(self.unbuilt[key])
        raise KeyError(key)
