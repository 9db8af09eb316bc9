"""Drop-in loaders for the models diffusion pipelines are made of, through ckptkit.

Each takes the arguments of the ``from_pretrained`` it wraps and returns the real
transformers/diffusers model.
"""

from ckptkit.adapters.dit import load_dit
from ckptkit.adapters.t5 import load_t5
from ckptkit.adapters.vae import load_vae

__all__ = ["load_dit", "load_t5", "load_vae"]
