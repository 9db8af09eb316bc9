"""Comparing a model ckptkit loaded with the one the library's own from_pretrained returns."""

from __future__ import annotations

import torch


def realigned(model):
    """``model`` with its tensors in fresh memory.

    from_pretrained leaves tensors in the mmap of the file, at offsets that are not 64-byte aligned;
    CPU kernels then take another vector path and round differently in the last bit. ckptkit reads
    into fresh aligned memory, so outputs are compared against the same weights in the same kind
    of memory.
    """
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


def assert_same_weights(ours, reference) -> None:
    """Same class, eval mode, and every tensor equal in key, dtype and value."""
    assert type(ours) is type(reference)
    assert not ours.training
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == ref_state.keys()
    for key, tensor in ref_state.items():
        assert ours_state[key].dtype == tensor.dtype, key
        assert torch.equal(ours_state[key], tensor), key
