"""Load a sharded checkpoint into a model built on the meta device, with ckptkit.load_sharded.

Builds a tiny T5 encoder with transformers, saves it sharded (and an fp16 variant of nothing:
asking for ``variant="fp16"`` falls back to the default weights, casts them, and warns), then
fills an empty (meta) model without ever holding the weights twice.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import T5Config, T5EncoderModel

from ckptkit import CkptWarning, load_sharded


def main() -> None:
    torch.manual_seed(0)
    config = T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "t5"
        T5EncoderModel(config).save_pretrained(directory, max_shard_size="20KB")
        print("files:", sorted(p.name for p in directory.iterdir()))

        # 1. A dict, keys under "encoder." only: copy-on-write views of the shards (zero-copy);
        #    mmap=False would read them into private memory instead.
        state = load_sharded(directory, prefix="encoder.", progress=False)
        print(f"dict: {len(state)} tensors, e.g. {next(iter(state))}")

        # 2. Straight into a meta-device model: parameters are assigned, never copied twice.
        with init_empty_weights():
            model = T5EncoderModel(T5Config.from_pretrained(directory))
        result = load_sharded(directory, model=model, progress=False)
        print("into model:", result)

        # 3. An fp16 variant that does not exist: default weights, cast to fp16, with a warning.
        with init_empty_weights():
            half = T5EncoderModel(T5Config.from_pretrained(directory))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CkptWarning)
            load_sharded(directory, model=half, variant="fp16", progress=False)
        print("fallback warning:", caught[0].message if caught else None)
        print("dtype after fallback:", half.shared.weight.dtype)

        ids = torch.tensor([[1, 5, 7, 2]])
        reference = T5EncoderModel.from_pretrained(directory).eval()
        with torch.no_grad():
            same = torch.allclose(
                model.eval()(input_ids=ids).last_hidden_state, reference(input_ids=ids).last_hidden_state
            )
        print("same outputs as from_pretrained:", same)
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
