"""Open-Sora 1.2 / 1.3 / 2.0 loader entry points, loading through ckptkit.

Swap the import and keep the call::

    # from opensora.utils.ckpt_utils import load_checkpoint          (1.2 / 1.3)
    # from opensora.models.text_encoder.t5 import T5Encoder
    # from opensora.models.vae.vae import VideoAutoencoderKL
    from ckptkit.shims.opensora import T5Encoder, VideoAutoencoderKL, load_checkpoint

    # from opensora.utils.ckpt import load_checkpoint                (2.0)
    from ckptkit.shims.opensora import load_checkpoint_v2 as load_checkpoint
    # from opensora.models.text.conditioner import HFEmbedder        (2.0)
    from ckptkit.shims.opensora import HFEmbedder

    # STDiT3.from_pretrained("hpcai-tech/OpenSora-STDiT-v3", **kwargs)  (1.2 / 1.3 hub ids)
    from ckptkit.shims.opensora import from_pretrained
    model = from_pretrained(STDiT3, "hpcai-tech/OpenSora-STDiT-v3", **kwargs)

Or leave Open-Sora's code as it is and patch the installed package::

    import ckptkit.shims.opensora

    ckptkit.shims.opensora.install()  # or: with ckptkit.shims.opensora.installed(): ...

Local directories, files and hub caches are honoured everywhere, ``cache_dir`` included, and
``.pt`` files are read with ``weights_only`` (a pickle that needs more than tensors is refused with
:class:`~ckptkit.UnsafeCheckpointError`, where upstream would run it).
"""

from ckptkit.shims.opensora._ckpt import (
    adapt_16ch_vae,
    find_model,
    load_checkpoint,
    load_checkpoint_v2,
    reparameter,
)
from ckptkit.shims.opensora._install import install, installed, uninstall
from ckptkit.shims.opensora._models import T5Encoder, VideoAutoencoderKL
from ckptkit.shims.opensora._pretrained import HFEmbedder, from_pretrained

__all__ = [
    "HFEmbedder",
    "T5Encoder",
    "VideoAutoencoderKL",
    "adapt_16ch_vae",
    "find_model",
    "from_pretrained",
    "install",
    "installed",
    "load_checkpoint",
    "load_checkpoint_v2",
    "reparameter",
    "uninstall",
]
