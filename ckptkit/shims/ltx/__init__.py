"""LTX-Video loader entry points, loading through ckptkit (see :mod:`ckptkit.shims.ltx._models`)."""

from ckptkit.shims.ltx._models import (
    COMPONENT_PREFIXES,
    DEFAULT_REPO,
    DEFAULT_TEXT_ENCODER,
    LTXSingleFile,
    create_ltx_video_pipeline,
    create_transformer,
    install,
    installed,
    load_component,
    load_scheduler,
    load_text_encoder,
    load_vae,
    read_single_file,
    uninstall,
)

__all__ = [
    "COMPONENT_PREFIXES",
    "DEFAULT_REPO",
    "DEFAULT_TEXT_ENCODER",
    "LTXSingleFile",
    "create_ltx_video_pipeline",
    "create_transformer",
    "install",
    "installed",
    "load_component",
    "load_scheduler",
    "load_text_encoder",
    "load_vae",
    "read_single_file",
    "uninstall",
]
