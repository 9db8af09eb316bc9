"""Wan2.1 / Wan2.2 native ``ckpt_dir`` layouts, loaded through ckptkit.

A Wan ``ckpt_dir`` holds the UMT5 encoder as ``models_t5_umt5-xxl-enc-bf16.pth``, its tokenizer in
``google/umt5-xxl/``, the VAE as ``Wan2.1_VAE.pth`` or ``Wan2.2_VAE.pth``, and the DiT as
``config.json`` + ``diffusion_pytorch_model*.safetensors`` (+ index) in the root, or, for the
Wan2.2 A14B models, in ``low_noise_model/`` and ``high_noise_model/``. Wan's code joins those names
onto ``checkpoint_dir``; :func:`wan_checkpoint` finds them (reporting what is missing up front) and
reads each part safely (``weights_only``), and :func:`load_dit` builds the DiT.

The loaders Wan's own code calls have drop-in replacements here, with Wan's names and signatures,
returning Wan's own objects (the ``wan`` package, from Wan2.1/Wan2.2 or the ``wan22`` release, must
be installed for its model classes)::

    # from wan.modules.t5 import T5EncoderModel
    # from wan.modules.vae2_1 import Wan2_1_VAE
    # from wan.modules.clip import CLIPModel  (wan.modules.animate.clip in Wan2.2)
    # from wan.modules.model import WanModel; WanModel.from_pretrained(ckpt_dir, subfolder=...)
    # from wan.distributed.fsdp import shard_model
    from ckptkit.shims.wan import CLIPModel, T5EncoderModel, Wan2_1_VAE, load_dit, shard_model

``shard_model`` is Wan's on FSDP2; given a DiT from :func:`meta_dit` it fills it after sharding, each
rank reading only its own shards. Or, leaving Wan's ``generate.py`` unchanged, call :func:`install`
first: ``from_pretrained`` of Wan's DiT classes, ``T5EncoderModel``, ``CLIPModel`` and the VAEs'
``_video_vae`` then load through ckptkit (:func:`uninstall` restores them). Wan's ``.pth`` files are read with ``weights_only`` (a pickle that needs more than
tensors is refused with :class:`~ckptkit.UnsafeCheckpointError`, never executed).
"""

from ckptkit.shims.wan._checkpoint import (
    DIT_SUBFOLDERS,
    T5_CHECKPOINT,
    T5_TOKENIZER,
    VAE_CHECKPOINTS,
    WanCheckpoint,
    wan_checkpoint,
)
from ckptkit.shims.wan._clip import CLIPModel
from ckptkit.shims.wan._dit import load_dit
from ckptkit.shims.wan._fsdp import meta_dit, shard_model
from ckptkit.shims.wan._install import install, installed, uninstall
from ckptkit.shims.wan._t5 import T5EncoderModel
from ckptkit.shims.wan._vae import Wan2_1_VAE, Wan2_2_VAE, WanVAE, video_vae_2_1, video_vae_2_2

__all__ = [
    "DIT_SUBFOLDERS",
    "CLIPModel",
    "T5_CHECKPOINT",
    "T5_TOKENIZER",
    "VAE_CHECKPOINTS",
    "T5EncoderModel",
    "Wan2_1_VAE",
    "Wan2_2_VAE",
    "WanCheckpoint",
    "WanVAE",
    "install",
    "installed",
    "load_dit",
    "meta_dit",
    "shard_model",
    "uninstall",
    "video_vae_2_1",
    "video_vae_2_2",
    "wan_checkpoint",
]
