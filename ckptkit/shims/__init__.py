"""Drop-in replacements for the checkpoint loaders of Open-Sora, LTX-Video and Wan.

Import the module of the project you use: :mod:`ckptkit.shims.opensora`,
:mod:`ckptkit.shims.ltx`, :mod:`ckptkit.shims.wan`.
"""

__all__ = ["ltx", "opensora", "wan"]
