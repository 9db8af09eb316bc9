"""Choosing and renaming checkpoint keys: ``prefix=`` and ``strip_prefixes=`` (no I/O here)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from ckptkit.errors import AmbiguousCheckpointError

__all__ = ["WRAPPER_PREFIXES", "KeySelection", "block_of", "in_modules", "select_keys"]

#: Prefixes training wrappers add: DDP/DataParallel, ``torch.compile``, FSDP.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.")


def block_of(name: str) -> str | None:
    """The repeated block a tensor lies in: its name up to the first numbered part, or ``None``.

    The one rule for "which block": the outermost numbered module (a child of a ``ModuleList`` or
    ``Sequential``) -- ``transformer_blocks.3``, ``model.layers.7``, ``encoder.block.0``,
    ``down_blocks.1``, GPT-style ``h.5``. :func:`~ckptkit.placement.memory.find_blocks` (the
    largest wrapped block of ``plan_memory``) and the modules the header-only device map keeps
    whole by default both use it. A number that ends the name is a tensor's own index in a
    ``ParameterList``, not a block.

    Example:
        >>> block_of("transformer_blocks.3.attn.to_q.weight"), block_of("lm_head.weight")
        ('transformer_blocks.3', None)
    """
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part.isascii() and part.isdigit():
            return ".".join(parts[: index + 1])
    return None


class KeySelection(dict[str, str]):
    """Output key -> key in the checkpoint, in checkpoint order."""

    @property
    def source_keys(self) -> set[str]:
        return set(self.values())


def _strip(key: str, prefixes: Sequence[str]) -> str:
    # Wrappers nest ("module._orig_mod.x"), so strip until no prefix matches.
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if prefix and key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def select_keys(
    keys: Iterable[str],
    *,
    prefix: str | None = None,
    strip_prefixes: Sequence[str] | str | None = None,
    where: str | os.PathLike[str] | None = None,
) -> KeySelection:
    """Which checkpoint keys to load, and under which names.

    ``strip_prefixes`` is applied first (repeatedly, so nested wrappers all go), then ``prefix``
    keeps only the keys under it and removes it.

    Args:
        keys: the checkpoint's keys.
        prefix: keep keys starting with this (``"vae."``) and strip it.
        strip_prefixes: wrapper prefixes to remove where present (``("module.", "_orig_mod.")``).
        where: the checkpoint, for messages.

    Raises:
        AmbiguousCheckpointError: two checkpoint keys end up with the same name.

    Example:
        >>> dict(select_keys(["module.vae.a", "module.t5.b"], prefix="vae.", strip_prefixes=["module."]))
        {'a': 'module.vae.a'}
    """
    prefixes = (strip_prefixes,) if isinstance(strip_prefixes, str) else tuple(strip_prefixes or ())
    if not prefixes and not prefix:  # every key as it is (the usual load): built in C
        keys = list(keys)
        selection = KeySelection(zip(keys, keys, strict=True))
        if len(selection) == len(keys):
            return selection
        # A key given twice: the loop below names it.
    selection = KeySelection()
    for key in keys:
        name = _strip(key, prefixes) if prefixes else key
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix) :]
        if name in selection:
            raise AmbiguousCheckpointError(
                f"keys {selection[name]!r} and {key!r} both become {name!r} after removing prefixes",
                path=where,
                fix="pass a narrower prefix= or fewer strip_prefixes",
            )
        selection[name] = key
    return selection


def in_modules(key: str, modules: Iterable[str]) -> bool:
    """Whether the model key ``key`` lies in one of ``modules``, matched by whole dotted parts.

    This is how ``_keep_in_fp32_modules`` is read everywhere in ckptkit (as transformers and
    diffusers do): ``"wo"`` matches ``encoder.block.0.layer.1.DenseReluDense.wo.weight`` but not
    ``two.weight``; a dotted name (``"norm_out.linear"``) matches those parts in a row.

    Example:
        >>> in_modules("blocks.0.norm2.weight", ["norm2"]), in_modules("blocks.0.norm20.weight", ["norm2"])
        (True, False)
    """
    padded = f".{key}."
    return any(f".{module}." in padded for module in modules if module)
