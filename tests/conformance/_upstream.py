"""Import the real upstream packages on a CPU machine, stubbing only what cannot import there.

Stubbed (see ``nox -s conformance``): ``torch.cuda.current_device`` while ``wan.modules.t5`` is
imported (a default argument evaluated at import), and the modules in :data:`STUBBED_MODULES`,
which ``wan/__init__`` and ``ltx_video.inference`` import for video I/O, audio and LoRA but no
loader calls. Using anything from a stubbed module raises ``RuntimeError``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

import torch

#: Modules replaced by stubs: the registry's torchvision wheel links CUDA builds of torch; the others
#: are heavy native packages the loaders never touch.
STUBBED_MODULES = ("torchvision", "cv2", "av", "decord", "librosa", "peft")


class _Unavailable:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{self._name} is stubbed in the conformance tests (see tests/conformance/_upstream.py)"
        )

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] in STUBBED_MODULES:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)

        def __getattr__(attr: str, _name: str = spec.name) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Unavailable(f"{_name}.{attr}")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


_done = False


def import_upstream() -> None:
    """Import ``ltx_video`` and ``wan`` (idempotent). Raises ``ImportError`` when they are not installed."""
    global _done
    if _done:
        return
    # transformers and diffusers decide once, at import, whether torchvision is there: let them see
    # that it is not before the stub makes ``import torchvision`` succeed.
    import diffusers.utils
    import transformers.utils.import_utils as transformers_imports

    if transformers_imports.is_torchvision_available() or diffusers.utils.is_torchvision_available():
        raise RuntimeError("a torchvision is installed: the conformance venv must not have one")
    for name in [n for n in sys.modules if n.split(".")[0] in STUBBED_MODULES]:
        del sys.modules[name]
    sys.meta_path.insert(0, _StubFinder())
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    try:
        import ltx_video.inference  # noqa: F401
        import wan
        import wan.distributed.fsdp
        import wan.modules.t5  # noqa: F401
    finally:
        torch.cuda.current_device = current_device  # type: ignore[assignment]
    _done = True


def cpu_attention() -> Any:
    """Wan's own SDPA fallback, in place of the CUDA-only ``flash_attention`` its DiT calls."""
    from wan.modules.attention import attention

    def flash_attention(q: Any, k: Any, v: Any, k_lens: Any = None, **kwargs: Any) -> Any:
        return attention(q, k, v, k_lens=None, **kwargs).to(q.dtype)

    return flash_attention
