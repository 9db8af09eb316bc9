"""Open-Sora 1.2/1.3 ``VideoAutoencoderKL``: upstream's class (``_upstream_vae.py``) vs the shim."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from ckptkit.shims.opensora import VideoAutoencoderKL
from tests.conformance.opensora import _upstream_vae


@pytest.fixture(scope="module")
def sd_vae(tmp_path_factory):
    """A tiny SD-style VAE: four blocks, so an 8x spatial factor as every SD VAE has."""
    directory = tmp_path_factory.mktemp("opensora-vae") / "sd-vae-ft-ema"
    torch.manual_seed(0)
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
    ).save_pretrained(directory)
    return directory


def aligned(vae):
    for tensor in vae.module.parameters():
        tensor.data = tensor.data.clone()  # from_pretrained maps the file; ckptkit reads aligned copies
    return vae


@pytest.mark.parametrize(("micro_batch_size", "scaling_factor"), [(None, 0.18215), (2, 0.13025)])
def test_encode_decode_and_sizes(sd_vae, micro_batch_size, scaling_factor):
    kwargs = dict(micro_batch_size=micro_batch_size, scaling_factor=scaling_factor)
    theirs = aligned(_upstream_vae.VideoAutoencoderKL(from_pretrained=str(sd_vae), **kwargs))
    ours = VideoAutoencoderKL(from_pretrained=str(sd_vae), **kwargs)
    ours_state, theirs_state = ours.module.state_dict(), theirs.module.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    assert all(
        torch.equal(ours_state[k], v) and ours_state[k].dtype == v.dtype for k, v in theirs_state.items()
    )
    assert ours.out_channels == theirs.out_channels and ours.patch_size == theirs.patch_size
    assert ours.get_latent_size([5, 64, None]) == theirs.get_latent_size([5, 64, None])

    video = torch.randn(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(2)
        z_theirs = theirs.encode(video)
        torch.manual_seed(2)
        z_ours = ours.encode(video)
        assert torch.equal(z_ours, z_theirs)
        assert torch.equal(ours.decode(z_ours), theirs.decode(z_theirs))
