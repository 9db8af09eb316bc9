"""LTX-Video's ``create_ltx_video_pipeline``, its parts loaded through ckptkit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ckptkit.errors import CheckpointNotFoundError, UnsafeCheckpointError
from ckptkit.shims.ltx._models import (
    _ltx,
    create_transformer,
    load_scheduler,
    load_text_encoder,
    load_vae,
)
from ckptkit.shims.ltx._single_file import read_single_file

__all__ = ["create_ltx_video_pipeline"]


def create_ltx_video_pipeline(
    ckpt_path: str | os.PathLike[str],
    precision: str,
    text_encoder_model_name_or_path: str | os.PathLike[str],
    sampler: str | None = None,
    device: str | torch.device | None = None,
    enhance_prompt: bool = False,
    prompt_enhancer_image_caption_model_name_or_path: str | None = None,
    prompt_enhancer_llm_model_name_or_path: str | None = None,
) -> Any:
    """LTX-Video's ``create_ltx_video_pipeline``: the same ``LTXVideoPipeline``, loaded through ckptkit.

    The transformer (:func:`create_transformer`), VAE (:func:`load_vae`), scheduler (from the
    embedded config, or ``sampler``), the T5 text encoder (``subfolder="text_encoder"``, only its
    files fetched) and ``T5Tokenizer`` (``subfolder="tokenizer"``) end where LTX-Video puts them:
    on ``device``, the VAE and text encoder in bf16, ``allowed_inference_steps`` from the metadata.

    Raises:
        UnsafeCheckpointError: ``enhance_prompt=True``: its caption model loads with
            ``trust_remote_code=True`` (code from the hub); use LTX-Video's own function for it.
        CheckpointNotFoundError: ``ckpt_path`` does not exist.
    """
    if enhance_prompt:
        raise UnsafeCheckpointError(
            "enhance_prompt=True loads the prompt-enhancer models with trust_remote_code=True "
            "(it runs code from the hub); ckptkit does not",
            path=prompt_enhancer_image_caption_model_name_or_path,
            fix="create the pipeline with enhance_prompt=False, or call ltx_video.inference."
            "create_ltx_video_pipeline for prompt enhancement",
        )
    from transformers import T5Tokenizer

    pipeline_class = _ltx("ltx_video.pipelines.pipeline_ltx_video.LTXVideoPipeline")
    patchifier_class = _ltx("ltx_video.models.transformers.symmetric_patchifier.SymmetricPatchifier")
    scheduler_class = _ltx("ltx_video.schedulers.rf.RectifiedFlowScheduler")
    path = Path(os.fspath(ckpt_path))
    if not path.exists():
        raise CheckpointNotFoundError(
            "does not exist (--ckpt_path)", path=path, fix="pass the LTX-Video .safetensors file"
        )
    single = read_single_file(path)
    allowed_inference_steps = single.config.get("allowed_inference_steps", None)
    vae = load_vae(single)
    transformer = create_transformer(path, precision)
    if sampler == "from_checkpoint" or not sampler:
        scheduler = load_scheduler(single)
    else:
        scheduler = scheduler_class(
            sampler=("Uniform" if sampler.lower() == "uniform" else "LinearQuadratic")
        )
    text_encoder, _ = load_text_encoder(text_encoder_model_name_or_path, with_tokenizer=False)
    tokenizer = T5Tokenizer.from_pretrained(text_encoder_model_name_or_path, subfolder="tokenizer")
    transformer = transformer.to(device)
    vae = vae.to(device).to(torch.bfloat16)
    text_encoder = text_encoder.to(device).to(torch.bfloat16)
    pipeline = pipeline_class(
        transformer=transformer,
        patchifier=patchifier_class(patch_size=1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        vae=vae,
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
        allowed_inference_steps=allowed_inference_steps,
    )
    return pipeline.to(device)
