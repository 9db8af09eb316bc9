# ruff: noqa
# fmt: off
# Copyright 2024 HPC-AI Technology Inc. All rights reserved.
# Licensed under the Apache License, Version 2.0 (the "License"); see
# https://github.com/hpcaitech/Open-Sora/blob/2ca632a2d1b338bc631c3364875f24d4af81ebe1/LICENSE
#
# Verbatim copy of VideoAutoencoderKL from Open-Sora 1.3, opensora/models/vae/vae.py at commit
# 2ca632a2d1b338bc631c3364875f24d4af81ebe1 (branch opensora/v1.3; 1.2 differs only in the fixed
# 0.18215 scale). Only the imports are changed: einops.rearrange (not installed here) -> the two
# patterns the class uses, written with torch; the @MODELS.register_module() decorator
# (opensora.registry) is left out.
import torch
import torch.nn as nn
from diffusers.models import AutoencoderKL


def rearrange(x, pattern, B=None):
    if pattern == "B C T H W -> (B T) C H W":
        return x.permute(0, 2, 1, 3, 4).flatten(0, 1)
    if pattern == "(B T) C H W -> B C T H W":
        return x.unflatten(0, (B, -1)).permute(0, 2, 1, 3, 4)
    raise NotImplementedError(pattern)


class VideoAutoencoderKL(nn.Module):
    def __init__(
        self,
        from_pretrained=None,
        micro_batch_size=None,
        cache_dir=None,
        local_files_only=False,
        subfolder=None,
        scaling_factor=0.18215,
    ):
        super().__init__()
        self.module = AutoencoderKL.from_pretrained(
            from_pretrained,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            subfolder=subfolder,
        )
        self.out_channels = self.module.config.latent_channels
        self.patch_size = (1, 8, 8)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = scaling_factor

    def encode(self, x):
        # x: (B, C, T, H, W)
        B = x.shape[0]
        x = rearrange(x, "B C T H W -> (B T) C H W")

        if self.micro_batch_size is None:
            x = self.module.encode(x).latent_dist.sample().mul_(self.scaling_factor)
        else:
            # NOTE: cannot be used for training
            bs = self.micro_batch_size
            x_out = []
            for i in range(0, x.shape[0], bs):
                x_bs = x[i : i + bs]
                x_bs = self.module.encode(x_bs).latent_dist.sample().mul_(self.scaling_factor)
                x_out.append(x_bs)
            x = torch.cat(x_out, dim=0)
        x = rearrange(x, "(B T) C H W -> B C T H W", B=B)
        return x

    def decode(self, x, **kwargs):
        # x: (B, C, T, H, W)
        B = x.shape[0]
        x = rearrange(x, "B C T H W -> (B T) C H W")
        if self.micro_batch_size is None:
            x = self.module.decode(x / self.scaling_factor).sample
        else:
            # NOTE: cannot be used for training
            bs = self.micro_batch_size
            x_out = []
            for i in range(0, x.shape[0], bs):
                x_bs = x[i : i + bs]
                x_bs = self.module.decode(x_bs / self.scaling_factor).sample
                x_out.append(x_bs)
            x = torch.cat(x_out, dim=0)
        x = rearrange(x, "(B T) C H W -> B C T H W", B=B)
        return x

    def get_latent_size(self, input_size):
        latent_size = []
        for i in range(3):
            # assert (
            #     input_size[i] is None or input_size[i] % self.patch_size[i] == 0
            # ), "Input size must be divisible by patch size"
            latent_size.append(input_size[i] // self.patch_size[i] if input_size[i] is not None else None)
        return latent_size

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype
