"""Open-Sora 1.3 ``T5Encoder``: ``tokenize_fn`` and ``encode(input_ids, attention_mask=None)``.

Upstream's ``opensora/models/text_encoder/t5.py`` is AGPL-3.0 (adapted from PixArt), so it is not
copied here; ``reference`` restates what its ``T5Embedder`` does (at the commit named in
``_upstream_v13.py``): ``AutoTokenizer`` + ``T5EncoderModel.from_pretrained(torch_dtype=dtype)``, the
model cast with ``.to(dtype)``, ``tokenize_fn = partial(tokenizer, max_length=, padding="max_length",
truncation=True, return_attention_mask=True, add_special_tokens=True, return_tensors="pt")``, and
``encode`` returning ``dict(y=last_hidden_state[:, None], mask=attention_mask)``. The schedulers
(``rf``, ``dpms``, ``iddpm``) call ``text_encoder.encode(**text_encoder.tokenize_fn(prompts))``.
"""

from __future__ import annotations

import shutil
from functools import partial

import pytest
import torch
from transformers import AutoTokenizer, T5EncoderModel

from ckptkit.shims.opensora import T5Encoder
from tests import _models

PROMPTS = ["a red cat sits on the mat", "a dog"]


@pytest.fixture(scope="module")
def t5_dir(layouts, tmp_path_factory):
    directory = tmp_path_factory.mktemp("opensora-t5") / "t5-v1_1-xxl"
    shutil.copytree(layouts["t5_sharded"], directory)
    _models.build_tokenizer().save_pretrained(directory)
    return directory


def reference(directory, dtype, max_length):
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = T5EncoderModel.from_pretrained(directory, torch_dtype=dtype).eval().to(dtype)
    for tensor in model.parameters():
        tensor.data = tensor.data.clone()  # aligned memory, as ckptkit reads (see tests/adapters)
    tokenize_fn = partial(
        tokenizer,
        max_length=max_length,
        padding="max_length",
        truncation=True,
        return_attention_mask=True,
        add_special_tokens=True,
        return_tensors="pt",
    )

    def encode(input_ids, attention_mask=None):
        with torch.no_grad():
            y = model(input_ids=input_ids, attention_mask=attention_mask)["last_hidden_state"].detach()
        return dict(y=y[:, None], mask=attention_mask)

    return tokenize_fn, encode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scheduler_call(t5_dir, dtype):
    encoder = T5Encoder(from_pretrained=t5_dir, model_max_length=12, device="cpu", dtype=dtype)
    tokenize_fn, encode = reference(t5_dir, dtype, 12)
    tokens = encoder.tokenize_fn(PROMPTS)
    expected_tokens = tokenize_fn(PROMPTS)
    assert tokens.keys() == expected_tokens.keys()
    assert all(torch.equal(tokens[k], expected_tokens[k]) for k in tokens)
    out = encoder.encode(**encoder.tokenize_fn(PROMPTS))
    expected = encode(**tokenize_fn(PROMPTS))
    assert out["y"].dtype == expected["y"].dtype == dtype
    assert torch.equal(out["y"], expected["y"])
    assert torch.equal(out["mask"], expected["mask"])


def test_encode_without_mask(t5_dir):
    encoder = T5Encoder(from_pretrained=t5_dir, model_max_length=12, device="cpu")
    tokenize_fn, encode = reference(t5_dir, torch.float32, 12)
    ids = tokenize_fn(PROMPTS)["input_ids"]
    out = encoder.encode(ids)
    assert out["mask"] is None
    assert torch.equal(out["y"], encode(ids)["y"])


def test_captions_as_in_1_2(t5_dir):
    """1.2 called ``encode(captions)``: the same embeddings as tokenising first."""
    encoder = T5Encoder(from_pretrained=t5_dir, model_max_length=12, device="cpu")
    by_ids = encoder.encode(**encoder.tokenize_fn(PROMPTS))
    by_text = encoder.encode(PROMPTS)
    assert torch.equal(by_text["y"], by_ids["y"]) and torch.equal(by_text["mask"], by_ids["mask"])
    with pytest.raises(TypeError, match="attention_mask"):
        encoder.encode(PROMPTS, attention_mask=by_ids["mask"])
