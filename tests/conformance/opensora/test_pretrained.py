"""Open-Sora's hub-id builders through ckptkit, against Open-Sora's own code on the same files.

1.2/1.3: ``STDiT3_XL_2(from_pretrained=<hub id>, **kwargs)`` calls transformers'
``STDiT3.from_pretrained`` (the builders and ``STDiT3Config`` are upstream's, verbatim, in
``_upstream_stdit3.py``); 2.0: ``HFEmbedder`` loads T5 and CLIP text encoders by path or hub id
(verbatim in ``_upstream_conditioner.py``). The shims give the same tensors, dtypes, buffers,
configs and outputs, and fetch only what is needed through ckptkit.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch

import ckptkit.shims.opensora as shim
from tests.conformance.opensora import _upstream_conditioner as upstream_text
from tests.conformance.opensora import _upstream_stdit3 as upstream_stdit3
from tests.conformance.opensora import _upstream_vae_pipeline as upstream_vae
from tests.conformance.opensora.test_install import REGISTRY, write

HUB_ID = "hpcai-tech/OpenSora-STDiT-v3"


def assert_same_module(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    assert type(ours) is type(theirs)
    assert ours.training == theirs.training
    for kind in ("named_parameters", "named_buffers"):
        mine, upstream = dict(getattr(ours, kind)()), dict(getattr(theirs, kind)())
        assert mine.keys() == upstream.keys(), kind
        for name, tensor in upstream.items():
            assert mine[name].dtype == tensor.dtype, name
            assert mine[name].device == tensor.device, name
            assert mine[name].requires_grad == tensor.requires_grad, name
            assert torch.equal(mine[name], tensor), name


def with_constructed_buffers(upstream: torch.nn.Module) -> torch.nn.Module:
    """transformers 5's ``from_pretrained`` leaves the non-persistent buffers of a model whose
    ``_init_weights`` does not set them (STDiT3's ``PositionEmbedding2D.inv_freq``, here
    ``pos_scale``) uninitialised memory; transformers 4 (Open-Sora's) keeps the constructor's values,
    and so does ckptkit. The reference gets the constructor's values back, checked against ckptkit's
    like every other tensor; under transformers 4 nothing is changed."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(next(upstream.parameters()).dtype)  # as from_pretrained builds it
        try:
            fresh = type(upstream)(upstream.config)
        finally:
            torch.set_default_dtype(previous)
        for name, buffer in fresh.named_buffers():
            if name in upstream._non_persistent_buffers_set:
                upstream.register_buffer(name, buffer.to(getattr(upstream, name).dtype), persistent=False)
    return upstream


def run_stdit3(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, 5, 4, generator=generator).to(dtype)
    y = torch.randn(1, 3, 6, generator=generator).to(dtype)
    with torch.no_grad():
        return model(x, y)


@pytest.fixture
def opensora_package(tmp_path, monkeypatch):
    """An importable ``opensora`` whose stdit3 and conditioner modules are the verbatim upstream ones."""
    write(
        tmp_path,
        {
            "opensora/__init__.py": "",
            "opensora/registry.py": REGISTRY,
            "opensora/models/__init__.py": "",
            "opensora/models/stdit/__init__.py": "",
            "opensora/models/stdit/stdit3.py": "from tests.conformance.opensora._upstream_stdit3 import *\n",
            "opensora/models/vae/__init__.py": "",
            "opensora/models/vae/vae.py": "from tests.conformance.opensora._upstream_vae_pipeline import *\n",
            "opensora/models/text/__init__.py": "from .conditioner import HFEmbedder\n",
            "opensora/models/text/conditioner.py": (
                "from tests.conformance.opensora._upstream_conditioner import HFEmbedder\n"
            ),
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    shim.uninstall()
    for name in [n for n in sys.modules if n == "opensora" or n.startswith("opensora.")]:
        del sys.modules[name]


BUILDERS = {"1.2": upstream_stdit3.STDiT3_XL_2_v12, "1.3": upstream_stdit3.STDiT3_XL_2_v13}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_stdit3_builder_from_a_hub_id(hub, tmp_path, opensora_package, version):
    builder = BUILDERS[version]
    kwargs = {"qk_norm": False, "enable_flash_attn": False, "enable_layernorm_kernel": False}
    # transformers' own from_pretrained (each side its own cache: ckptkit would find upstream's files)
    theirs = with_constructed_buffers(
        builder(from_pretrained=HUB_ID, cache_dir=str(tmp_path / "theirs"), **kwargs)
    )
    import opensora.models.stdit.stdit3 as stdit3

    names = shim.install()
    assert "opensora.models.stdit.stdit3.STDiT3.from_pretrained" in names
    hub.reset()
    ours = builder(from_pretrained=HUB_ID, cache_dir=str(tmp_path / "ours"), **kwargs)
    # config.json and the weights only: not the model card, not the training state
    assert hub.downloads() == {f"{HUB_ID}/config.json", f"{HUB_ID}/model.safetensors"}
    assert_same_module(ours, theirs)
    assert ours.config.to_dict() == theirs.config.to_dict()
    assert ours.config.qk_norm is False  # the builder's kwargs override config.json, as upstream
    assert torch.equal(run_stdit3(ours), run_stdit3(theirs))
    # dtype and unknown kwargs as transformers: torch_dtype honoured, a non-config kwarg reaches the class
    assert_same_module(
        stdit3.STDiT3.from_pretrained(HUB_ID, torch_dtype=torch.bfloat16),
        with_constructed_buffers(_original(stdit3.STDiT3, HUB_ID, torch_dtype=torch.bfloat16)),
    )
    with pytest.raises(TypeError, match="nonsense"):
        stdit3.STDiT3.from_pretrained(HUB_ID, nonsense=1)
    with pytest.raises(TypeError, match="proxies"):
        stdit3.STDiT3.from_pretrained(HUB_ID, proxies={"https": "x"})
    shim.uninstall()
    assert "from_pretrained" not in vars(stdit3.STDiT3)


def test_vae_pipeline_builder_from_a_hub_id(hub, tmp_path, opensora_package):
    # OpenSoraVAE_V1_2(from_pretrained="hpcai-tech/OpenSora-VAE-v1.2"): VideoAutoencoderPipeline.from_pretrained,
    # whose constructor loads the SDXL VAE from the hub (VideoAutoencoderKL) before the release fills it
    theirs = upstream_vae_pipeline(tmp_path)
    import opensora.models.vae.vae as vae_module

    names = shim.install()
    assert "opensora.models.vae.vae.VideoAutoencoderPipeline.from_pretrained" in names
    assert vae_module.MODELS._module_dict["VideoAutoencoderKL"] is shim.VideoAutoencoderKL
    # (upstream's attempt cached the release; what ckptkit fetches is checked in the STDiT3 test)
    ours = upstream_vae.OpenSoraVAE_V1_2(from_pretrained="hpcai-tech/OpenSora-VAE-v1.2")
    assert type(ours) is type(theirs)
    for kind in ("named_parameters", "named_buffers"):
        mine, upstream = dict(getattr(ours, kind)()), dict(getattr(theirs, kind)())
        assert mine.keys() == upstream.keys()
        for name, tensor in upstream.items():
            assert (mine[name].dtype, mine[name].device) == (tensor.dtype, tensor.device), name
            assert torch.equal(mine[name], tensor), name
    assert ours.training == theirs.training
    assert ours.micro_z_frame_size == theirs.micro_z_frame_size == 17
    video = torch.randn(1, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    z_ours = ours.encode(video)
    torch.manual_seed(0)
    z_theirs = theirs.encode(video)
    assert torch.equal(z_ours, z_theirs)
    with torch.no_grad():
        assert torch.equal(ours.decode(z_ours, num_frames=2), theirs.decode(z_theirs, num_frames=2))


def upstream_vae_pipeline(tmp_path):
    """``OpenSoraVAE_V1_2(from_pretrained="hpcai-tech/OpenSora-VAE-v1.2")`` with transformers' own loading.

    Under transformers 5 Open-Sora 1.2's class cannot be loaded so (it never calls ``post_init()``,
    which transformers 5 requires: ``AttributeError: all_tied_weights_keys``); the reference is then
    what transformers 4 does: the builder's model (its kwargs, its constructor, the SDXL VAE loaded
    from the hub) filled strictly with the release's tensors, in eval mode.
    """
    import transformers
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    if int(transformers.__version__.split(".")[0]) < 5:
        return upstream_vae.OpenSoraVAE_V1_2(from_pretrained="hpcai-tech/OpenSora-VAE-v1.2")
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        upstream_vae.OpenSoraVAE_V1_2(from_pretrained="hpcai-tech/OpenSora-VAE-v1.2")
    model = upstream_vae.OpenSoraVAE_V1_2(from_pretrained=None)
    weights = hf_hub_download(
        "hpcai-tech/OpenSora-VAE-v1.2", "model.safetensors", cache_dir=tmp_path / "theirs"
    )
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval()


def _original(cls, *args, **kwargs):
    """transformers' from_pretrained, bypassing the patch on the class."""
    from transformers import PreTrainedModel

    return PreTrainedModel.from_pretrained.__func__(cls, *args, **kwargs)


def test_stdit3_1_3_force_huggingface_local_directory(tmp_path):
    # 1.3 with force_huggingface=True takes a local save_pretrained folder through from_pretrained too
    from tests.conformance.opensora.conftest import pretrained_stdit3

    pretrained_stdit3(seed=9).save_pretrained(tmp_path / "stdit3")
    theirs = with_constructed_buffers(
        upstream_stdit3.STDiT3_XL_2_v13(from_pretrained=str(tmp_path / "stdit3"), force_huggingface=True)
    )
    ours = shim.from_pretrained(upstream_stdit3.STDiT3, str(tmp_path / "stdit3"))
    assert_same_module(ours, theirs)
    assert torch.equal(run_stdit3(ours), run_stdit3(theirs))


@pytest.fixture(scope="module")
def text_encoders(tmp_path_factory):
    """Open-Sora 2.0's ./ckpts/google/t5-v1_1-xxl and ./ckpts/openai/clip-vit-large-patch14, tiny."""
    import transformers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Tokenizer

    from tests import _models

    root = tmp_path_factory.mktemp("ckpts")
    t5 = root / "google" / "t5-tiny"
    _models.build_t5(seed=3).save_pretrained(t5)
    words = ["a", "red", "cat", "dog"]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [
        (f"\u2581{w}", -1.0) for w in words
    ]
    if int(transformers.__version__.split(".")[0]) >= 5:
        T5Tokenizer(vocab=pieces, extra_ids=0).save_pretrained(t5)
    else:  # transformers 4 (Open-Sora's): T5Tokenizer is sentencepiece's and reads a spiece.model
        import sentencepiece

        trained = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter([" ".join(words)] * 4 + ["a red cat", "a dog"]),
            model_writer=trained,
            vocab_size=16,  # at most: the letters and the special pieces, whole words where they fit
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        (root / "spiece.model").write_bytes(trained.getvalue())
        T5Tokenizer(vocab_file=str(root / "spiece.model"), extra_ids=0).save_pretrained(t5)

    clip = root / "openai" / "clip-tiny"
    letters = "acdegort"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in [
        *letters,
        *(f"{c}</w>" for c in letters),
        "re",
        "red</w>",
        "ca",
        "cat</w>",
        "do",
        "dog</w>",
    ]:
        vocab.setdefault(piece, len(vocab))
    merges = ["#version: 0.2", "r e", "re d</w>", "c a", "ca t</w>", "d o", "do g</w>"]
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), pad_token="<|endoftext|>")
    torch.manual_seed(4)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=8,
    )
    CLIPTextModel(config).save_pretrained(clip)
    tokenizer.save_pretrained(clip)
    return {"t5": t5, "clip": clip}


@pytest.mark.parametrize("torch_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("encoder", "max_length"), [("t5", 8), ("clip", 7)])
def test_hf_embedder(text_encoders, encoder, max_length, torch_dtype):
    path = str(text_encoders[encoder])
    # as Open-Sora 2.0 builds them: build_module(cfg.t5, MODELS, device_map=device, torch_dtype=dtype)
    kwargs = {"device_map": "cpu", "torch_dtype": torch_dtype}
    theirs = upstream_text.HFEmbedder(path, max_length, **kwargs)
    ours = shim.HFEmbedder(path, max_length, **kwargs)
    assert (ours.is_clip, ours.output_key, ours.max_length) == (
        theirs.is_clip,
        theirs.output_key,
        theirs.max_length,
    )
    assert type(ours.tokenizer) is type(theirs.tokenizer)
    assert_same_module(ours.hf_module, theirs.hf_module)
    assert next(ours.hf_module.parameters()).dtype == torch_dtype
    captions = ["a red cat", "dog"]
    for added_tokens, seq_align in [(0, 1), (1, 4)]:
        mine, upstream = ours(captions, added_tokens, seq_align), theirs(captions, added_tokens, seq_align)
        assert mine.dtype == upstream.dtype
        assert torch.equal(mine, upstream)


def test_hf_embedder_refuses_what_upstream_refuses(text_encoders):
    with pytest.raises(AssertionError):
        upstream_text.HFEmbedder(str(text_encoders["clip"]), 7, shardformer=True)
    with pytest.raises(ValueError, match="Shardformer is not supported for CLIP"):
        shim.HFEmbedder(str(text_encoders["clip"]), 7, shardformer=True)
    with pytest.raises(TypeError, match="nonsense"):
        shim.HFEmbedder(str(text_encoders["clip"]), 7, nonsense=True)


def test_install_replaces_hf_embedder(opensora_package, text_encoders):
    import opensora.models.text as text
    import opensora.models.text.conditioner as conditioner

    upstream_class = conditioner.HFEmbedder
    names = shim.install()
    assert {"opensora.models.text.HFEmbedder", "opensora.models.text.conditioner.HFEmbedder"} <= set(names)
    assert conditioner.HFEmbedder is shim.HFEmbedder and text.HFEmbedder is shim.HFEmbedder
    ours = conditioner.HFEmbedder(str(text_encoders["t5"]), 8)
    theirs = upstream_class(str(text_encoders["t5"]), 8)
    assert_same_module(ours.hf_module, theirs.hf_module)
    shim.uninstall()
    assert conditioner.HFEmbedder is upstream_class


@pytest.mark.parametrize("encoder", ["t5", "clip"])
def test_hf_embedder_from_a_hub_id(hub, hub_repos, text_encoders, tmp_path, encoder):
    import shutil

    repo_id = {"t5": "google/t5-tiny", "clip": "openai/clip-tiny"}[encoder]
    if not (hub_repos / repo_id).exists():
        shutil.copytree(text_encoders[encoder], hub_repos / repo_id)
        (hub_repos / repo_id / "flax_model.msgpack").write_bytes(b"never fetched")
    hub.reset()
    theirs = upstream_text.HFEmbedder(repo_id, 8, cache_dir=str(tmp_path / "theirs"))
    hub.reset()
    ours = shim.HFEmbedder(repo_id, 8, cache_dir=str(tmp_path / "ours"))
    fetched = hub.downloads()
    assert f"{repo_id}/config.json" in fetched and f"{repo_id}/model.safetensors" in fetched
    assert f"{repo_id}/flax_model.msgpack" not in fetched
    assert type(ours.tokenizer) is type(theirs.tokenizer)
    assert_same_module(ours.hf_module, theirs.hf_module)
    assert torch.equal(ours(["a red cat"]), theirs(["a red cat"]))
