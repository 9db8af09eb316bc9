# ruff: noqa
# fmt: off
# Copyright 2024-2025 The Alibaba Wan Team Authors / Alibaba-Quark. Licensed under the Apache License,
# Version 2.0; see https://github.com/Alibaba-Quark/LiveAvatar/blob/9c2c38de1715e553127b42c82cb959f756b02595/LICENSE
#
# Live Avatar's loader code where it differs from Wan's, at commit
# 9c2c38de1715e553127b42c82cb959f756b02595 of Alibaba-Quark/LiveAvatar:
#
# - Wan2_1_VAE.__init__ of liveavatar/models/wan/wan_2_2/modules/vae2_1.py (its vendored Wan2.2):
#   the model is cast to ``dtype`` (``.to(device,dtype)``), where Wan's stays float32
#   (``.to(device)``). Copied verbatim (encode/decode left out); the conformance test puts it into a
#   copy of the wan package, as Live Avatar's vendored package has it, so it calls that package's
#   ``_video_vae``.
# - The loading part of WanS2V.__init__ of liveavatar/models/wan/causal_s2v_pipeline.py (lines
#   118-162): T5EncoderModel and Wan2_1_VAE from the vendored Wan, and its own DiT class
#   (``CausalWanModel_S2V``, liveavatar/models/wan/causal_model_s2v.py, a diffusers ModelMixin
#   outside the vendored Wan package) through ``from_pretrained(checkpoint_dir, torch_dtype=,
#   device_map=)``. Copied verbatim into a function of the classes it uses (Live Avatar imports them
#   at module level, and ``self.device`` is ``torch.device(f"cuda:{device_id}")``, set by the
#   caller); the schedulers part between them is left out. CausalWanModel_S2V itself is not
#   copied: its ``__init__`` puts its rotary table on CUDA (``.to("cuda")``), so no CPU machine can
#   build it; the test uses a class of the same loading kind (a ModelMixin DiT outside the Wan
#   package, Wan2.2-S2V-14B's weights and config).
import os

import torch

from wan.modules.vae2_1 import _video_vae


class Wan2_1_VAE:

    def __init__(self,
                 z_dim=16,
                 vae_pth='cache/vae_step_411000.pth',
                 dtype=torch.float,
                 device="cuda"):
        self.dtype = dtype
        self.device = device

        mean = [
            -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
            0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921
        ]
        std = [
            2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
            3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160
        ]
        self.mean = torch.tensor(mean, dtype=dtype, device=device)
        self.std = torch.tensor(std, dtype=dtype, device=device)
        self.scale = [self.mean, 1.0 / self.std]

        # init model
        self.model = _video_vae(
            pretrained_path=vae_pth,
            z_dim=z_dim,
        ).eval().requires_grad_(False).to(device,dtype)


def load_models(self, config, checkpoint_dir, device_id, t5_fsdp, dit_fsdp, shard_model, partial,
                T5EncoderModel, Wan2_1_VAE, CausalWanModel_S2V):
    self.param_dtype = config.param_dtype

    shard_fn = partial(shard_model, device_id=device_id)
    self.text_encoder = T5EncoderModel(
        text_len=config.text_len,
        dtype=config.t5_dtype,
        device=torch.device('cpu'),
        checkpoint_path=os.path.join(checkpoint_dir, config.t5_checkpoint),
        tokenizer_path=os.path.join(checkpoint_dir, config.t5_tokenizer),
        shard_fn=shard_fn if t5_fsdp else None,
    )

    self.vae = Wan2_1_VAE(
        vae_pth=os.path.join(checkpoint_dir, config.vae_checkpoint),
        device=self.device,dtype=self.param_dtype)

    if not dit_fsdp:
        self.noise_model = CausalWanModel_S2V.from_pretrained(
            checkpoint_dir,
            torch_dtype=self.param_dtype,
            device_map=self.device)
    else:
        self.noise_model = CausalWanModel_S2V.from_pretrained(
            checkpoint_dir, torch_dtype=self.param_dtype)

    self.noise_model.freqs.to(device=self.device)
