"""Place a model across CPU and disk straight from its checkpoint, with no copy of the disk part.

Builds a tiny Llama with transformers, saves it sharded, plans a device map from the headers alone
(what `ckptkit plan --device-map` prints), loads it under a CPU budget smaller than the weights,
and checks the output against transformers' own fully loaded model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import LlamaConfig, LlamaForCausalLM

from ckptkit.placement.device_map import plan_device_map
from ckptkit.placement.dispatch import load_with_device_map


def main() -> None:
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, offload = Path(tmp) / "llama", Path(tmp) / "offload"
        LlamaForCausalLM(config).save_pretrained(checkpoint, max_shard_size="60KB")

        plan = plan_device_map(checkpoint, max_memory={"cpu": "100KiB"})  # no torch needed for this
        print(plan.format())

        with init_empty_weights():
            model = LlamaForCausalLM(config).eval()
        result = load_with_device_map(checkpoint, model, device_map=plan.device_map, offload_folder=offload)
        print(
            f"offload folder holds {sorted(os.listdir(offload))}; {len(result.offload_index)} tensors on disk"
        )

        ids = torch.arange(10).reshape(1, 10)
        reference = LlamaForCausalLM.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            same = torch.equal(model(ids).logits, reference(ids).logits)
        print(f"logits equal to transformers' fully loaded model: {same}")
        assert same


if __name__ == "__main__":
    main()
