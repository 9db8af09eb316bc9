"""Comparing a model ckptkit loaded with the one the library's own from_pretrained returns."""

from __future__ import annotations

import torch


def file_backed(tensor: torch.Tensor) -> bool:
    """Whether a CPU tensor views a file map (its storage cannot be resized) rather than private memory."""
    return tensor.device.type == "cpu" and not tensor.untyped_storage().resizable()


def assert_same_weights(ours, reference) -> None:
    """Same class, eval mode, and every tensor equal in key, dtype and value."""
    assert type(ours) is type(reference)
    assert not ours.training
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == ref_state.keys()
    for key, tensor in ref_state.items():
        assert ours_state[key].dtype == tensor.dtype, key
        assert torch.equal(ours_state[key], tensor), key
        # zero-copy exactly where from_pretrained is: same kind of memory, so the same kernels
        # (and the same rounding) run on it
        assert file_backed(ours_state[key]) == file_backed(tensor), key
