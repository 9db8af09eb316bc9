# ruff: noqa
# fmt: off
# Copyright 2024 HPC-AI Technology Inc. All rights reserved.
# Licensed under the Apache License, Version 2.0 (the "License"); see
# https://github.com/hpcaitech/Open-Sora/blob/2ca632a2d1b338bc631c3364875f24d4af81ebe1/LICENSE
#
# Verbatim copies from Open-Sora's opensora/models/stdit/stdit3.py: STDiT3Config and the
# STDiT3_XL_2 builder at commit 2ca632a2d1b338bc631c3364875f24d4af81ebe1 (branch opensora/v1.3),
# and the STDiT3_XL_2 builder at commit bde3c420a19e7f84a4f3144e01eeb132b9e33a06 (branch
# opensora/v1.2). Changed: the builders carry a version suffix (_v12, _v13) and are not registered
# (@MODELS.register_module); load_checkpoint comes from the verbatim loaders of that version. The
# model class itself (attention, timm, rotary embeddings, ColossalAI) is not copied: STDiT3 below is
# a tiny transformers PreTrainedModel with STDiT3's config_class and parameter and buffer kinds,
# since what these builders exercise with a hub id is transformers' own from_pretrained.

import os

import torch
import torch.nn as nn
from transformers import PretrainedConfig, PreTrainedModel

from tests.conformance.opensora._upstream_v12 import load_checkpoint as load_checkpoint_v12
from tests.conformance.opensora._upstream_v13 import load_checkpoint


class STDiT3Config(PretrainedConfig):
    model_type = "STDiT3"

    def __init__(
        self,
        input_size=(None, None, None),
        input_sq_size=512,
        in_channels=16,
        patch_size=(1, 2, 2),
        hidden_size=1152,
        depth=28,
        num_heads=16,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        pred_sigma=True,
        drop_path=0.0,
        caption_channels=4096,
        model_max_length=300,
        qk_norm=True,
        enable_flash_attn=False,
        enable_layernorm_kernel=False,
        enable_sequence_parallelism=False,
        only_train_temporal=False,
        freeze_y_embedder=False,
        skip_temporal=False,
        skip_y_embedder=False,
        kernel_size=None,
        use_spatial_rope=False,
        **kwargs,
    ):
        self.input_size = input_size
        self.input_sq_size = input_sq_size
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.class_dropout_prob = class_dropout_prob
        self.pred_sigma = pred_sigma
        self.drop_path = drop_path
        self.caption_channels = caption_channels
        self.model_max_length = model_max_length
        self.qk_norm = qk_norm
        self.enable_flash_attn = enable_flash_attn
        self.enable_layernorm_kernel = enable_layernorm_kernel
        self.enable_sequence_parallelism = enable_sequence_parallelism
        self.only_train_temporal = only_train_temporal
        self.freeze_y_embedder = freeze_y_embedder
        self.skip_y_embedder = skip_y_embedder
        self.skip_temporal = skip_temporal
        self.kernel_size = kernel_size
        self.use_spatial_rope = use_spatial_rope
        super().__init__(**kwargs)


class STDiT3(PreTrainedModel):  # the tiny stand-in (not upstream's code)
    config_class = STDiT3Config

    def __init__(self, config):
        super().__init__(config)
        self.out_channels = config.in_channels * 2 if config.pred_sigma else config.in_channels
        self.x_embedder = nn.Linear(config.in_channels, config.hidden_size)
        self.y_embedder = nn.Linear(config.caption_channels, config.hidden_size)
        self.spatial_blocks = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.depth))
        self.temporal_blocks = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.depth))
        self.final_layer = nn.Linear(config.hidden_size, self.out_channels)
        self.register_buffer("pos_scale", torch.linspace(0.5, 1.5, config.hidden_size), persistent=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x, y):
        h = self.x_embedder(x) * self.pos_scale + self.y_embedder(y).mean(1, keepdim=True)
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks):
            h = h + temporal(torch.tanh(spatial(h)))
        return self.final_layer(h)


def STDiT3_XL_2_v13(from_pretrained=None, **kwargs):
    force_huggingface = kwargs.pop("force_huggingface", False)
    adapt_16ch = kwargs.pop("adapt_16ch", False)
    if force_huggingface or from_pretrained is not None and not os.path.exists(from_pretrained):
        model = STDiT3.from_pretrained(from_pretrained, **kwargs)
    else:
        config = STDiT3Config(depth=28, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16, **kwargs)
        model = STDiT3(config)
        if from_pretrained is not None:
            load_checkpoint(model, from_pretrained, adapt_16ch=adapt_16ch)
    return model


def STDiT3_XL_2_v12(from_pretrained=None, **kwargs):
    if from_pretrained is not None and not os.path.isdir(from_pretrained):
        model = STDiT3.from_pretrained(from_pretrained, **kwargs)
    else:
        config = STDiT3Config(depth=28, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16, **kwargs)
        model = STDiT3(config)
        if from_pretrained is not None:
            load_checkpoint_v12(model, from_pretrained)
    return model
