from __future__ import annotations

import pytest

from ckptkit import AmbiguousCheckpointError
from ckptkit.format.keys import WRAPPER_PREFIXES, select_keys


def test_nested_wrappers_are_all_stripped():
    keys = ["module._orig_mod._fsdp_wrapped_module.w", "module.b"]
    assert dict(select_keys(keys, strip_prefixes=WRAPPER_PREFIXES)) == {"w": keys[0], "b": keys[1]}


def test_prefix_keeps_and_strips():
    keys = ["vae.a", "vae.b.c", "text.d", "vaex.e"]
    assert dict(select_keys(keys, prefix="vae.")) == {"a": "vae.a", "b.c": "vae.b.c"}


def test_collisions_are_refused():
    with pytest.raises(AmbiguousCheckpointError, match=r"'module.w' and 'w' both become 'w'"):
        select_keys(["module.w", "w"], strip_prefixes="module.")


def test_nothing_asked_keeps_everything_in_order():
    keys = ["b", "a", "module.c"]
    assert list(select_keys(keys)) == keys
