"""LTX-Video loader entry points, loading through ckptkit.

LTX-Video ships one ``.safetensors`` file per release: its metadata holds a ``config`` JSON with
``transformer``, ``vae`` and ``scheduler`` parts, the transformer's weights are prefixed
``model.diffusion_model.`` and the VAE's ``vae.`` (with the latent statistics under
``vae.per_channel_statistics.``). The text encoder is the T5 of ``PixArt-alpha/PixArt-XL-2-1024-MS``
(``subfolder="text_encoder"``). Swap the import::

    # from ltx_video.inference import create_latent_upsampler, create_ltx_video_pipeline, create_transformer
    from ckptkit.shims.ltx import create_latent_upsampler, create_ltx_video_pipeline, create_transformer

or leave LTX-Video's code as it is and call :func:`install` first: its ``inference.py`` then loads
through ckptkit (:func:`uninstall` puts LTX-Video's loaders back).

The model classes are LTX-Video's own (``Transformer3DModel``, ``CausalVideoAutoencoder``,
``RectifiedFlowScheduler``), so the ``ltx-video`` package must be installed for them; what ckptkit
replaces is finding and reading the weights (offline first, only the needed files fetched, headers
validated, no float32 copy of a bf16 transformer).
"""

from ckptkit.shims.ltx._install import install, installed, uninstall
from ckptkit.shims.ltx._models import (
    DEFAULT_TEXT_ENCODER,
    create_transformer,
    load_component,
    load_scheduler,
    load_text_encoder,
    load_vae,
)
from ckptkit.shims.ltx._pipeline import create_ltx_video_pipeline
from ckptkit.shims.ltx._single_file import (
    COMPONENT_PREFIXES,
    DEFAULT_REPO,
    LTXSingleFile,
    read_single_file,
)
from ckptkit.shims.ltx._upsampler import create_latent_upsampler, hf_hub_download, load_latent_upsampler

__all__ = [
    "COMPONENT_PREFIXES",
    "DEFAULT_REPO",
    "DEFAULT_TEXT_ENCODER",
    "LTXSingleFile",
    "create_latent_upsampler",
    "create_ltx_video_pipeline",
    "create_transformer",
    "hf_hub_download",
    "install",
    "installed",
    "load_component",
    "load_latent_upsampler",
    "load_scheduler",
    "load_text_encoder",
    "load_vae",
    "read_single_file",
    "uninstall",
]
