"""LTX-Video's own ``ltx_video.inference.infer()``, end to end, without and with ckptkit's ``install()``.

The release is a tiny one in the upstream formats (conftest.py): the single ``.safetensors`` with its
config in the metadata, the spatial upscaler, and the PixArt-style text encoder repo (T5 +
``T5Tokenizer``). They are served by a local Hub (tests/hub_server.py) under the names a real
pipeline config uses (``Lightricks/LTX-Video``, ``PixArt-alpha/PixArt-XL-2-1024-MS``), so ``infer()``
runs every call it makes on a real machine: ``hf_hub_download`` of the checkpoint and the upscaler,
``create_ltx_video_pipeline`` (VAE, transformer, scheduler, text encoder, tokenizer),
``create_latent_upsampler``, the two-pass multi-scale generation (a config shaped like
``configs/ltxv-2b-0.9.8-distilled.yaml``, 2 steps a pass, the bf16 release), decoding, and writing
the output; and the single-scale pipeline (``configs/ltxv-2b-0.9.6-distilled.yaml``'s shape, the
fp32 release, ``precision: mixed_precision``). The CPU runs it all: ``infer()`` picks its device with
``get_device()``, and nothing on this path needs CUDA.

Each run has its own empty hub cache and the same seed; the frames ``infer()`` hands to its writer
and the float video its pipeline returns must be ``torch.equal``.

What is not upstream's own in these runs (nothing else is stubbed or replaced):

- the modules tests/conformance/_upstream.py stubs at import (torchvision, cv2, av, decord,
  librosa, peft): ``infer()`` only calls them for conditioning media, which these runs do not pass;
- for a video (``num_frames > 1``), ``imageio.get_writer``: ``infer()`` writes ``.mp4`` through
  imageio's ffmpeg or pyav plugin, and neither is installed (``av`` is stubbed); a recorder of the
  frames ``infer()`` appends takes its place. A single frame goes to a ``.png`` through imageio as is;
- ``prompt_enhancement_words_threshold: 0`` in the config: prompt enhancement loads Florence-2 with
  ``trust_remote_code=True``, which ckptkit refuses (``UnsafeCheckpointError``, test_ltx.py);
- ``stochastic_sampling: false`` in the end-to-end comparison: with it on, the sampling noise comes
  from torch's global generator, which loading advances differently (see the last test);
- a spy on ``LTXVideoPipeline.__call__`` that keeps the pipeline and what it returns, unchanged.

That ckptkit's path was taken is seen in which reader opened the files, recorded by two more spies
(each calls what it wraps unchanged): ckptkit maps the files it reads with ``FileMaps._map``, LTX-Video
opens its own with the ``safe_open`` each of its modules imports. With ``install()`` ckptkit maps the
checkpoint, the upscaler and the text encoder's weights and LTX-Video opens none; without it the
other way round.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ckptkit import UnsafeCheckpointError
from ckptkit.io.reader import FileMaps
from ckptkit.shims import ltx as shim
from tests import _models
from tests.conformance.ltx.conftest import TRANSFORMER_CONFIG, write_release
from tests.hub_server import HubServer, point_huggingface_hub_at

import ltx_video.inference as upstream  # isort: skip
import ltx_video.models.autoencoders.causal_video_autoencoder  # isort: skip
import ltx_video.models.autoencoders.latent_upsampler  # isort: skip
import ltx_video.models.transformers.transformer3d  # isort: skip
import ltx_video.schedulers.rf  # isort: skip
from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline  # isort: skip

CHECKPOINT = "ltxv-2b-0.9.8-distilled.safetensors"
#: served as the fp32 release, for the single-scale config
BASE_CHECKPOINT = "ltxv-2b-0.9.6-distilled-04-25.safetensors"
UPSCALER = "ltxv-spatial-upscaler-0.9.8.safetensors"
TEXT_ENCODER = "PixArt-alpha/PixArt-XL-2-1024-MS"
SEED = 7
#: conftest.py's transformer with ``caption_channels`` the tiny T5's width (tests/_models.py): here
#: the transformer is fed the text encoder's output (the loader tests feed their own)
INFER_TRANSFORMER_CONFIG = TRANSFORMER_CONFIG | {"caption_channels": 32}
#: The LTX-Video modules that read weights or configs with ``safe_open``.
SAFE_OPEN_USERS = (
    upstream,
    ltx_video.schedulers.rf,
    ltx_video.models.transformers.transformer3d,
    ltx_video.models.autoencoders.causal_video_autoencoder,
    ltx_video.models.autoencoders.latent_upsampler,
)
#: configs/ltxv-2b-0.9.8-distilled.yaml, with two steps a pass (timesteps the tiny release allows)
#: and prompt enhancement off.
PIPELINE_CONFIG = {
    "pipeline_type": "multi-scale",
    "checkpoint_path": CHECKPOINT,
    "downscale_factor": 0.6666666,
    "spatial_upscaler_model_path": UPSCALER,
    "stg_mode": "attention_values",
    "decode_timestep": 0.05,
    "decode_noise_scale": 0.025,
    "text_encoder_model_name_or_path": TEXT_ENCODER,
    "precision": "bfloat16",
    "sampler": "from_checkpoint",
    "prompt_enhancement_words_threshold": 0,
    "prompt_enhancer_image_caption_model_name_or_path": "MiaoshouAI/Florence-2-large-PromptGen-v2.0",
    "prompt_enhancer_llm_model_name_or_path": "unsloth/Llama-3.2-3B-Instruct",
    "stochastic_sampling": False,
    "first_pass": {
        "timesteps": [1.0, 0.9],
        "guidance_scale": 1,
        "stg_scale": 0,
        "rescaling_scale": 1,
        "skip_block_list": [42],
    },
    "second_pass": {
        "timesteps": [0.9, 0.5],
        "guidance_scale": 1,
        "stg_scale": 0,
        "rescaling_scale": 1,
        "skip_block_list": [42],
    },
}

#: configs/ltxv-2b-0.9.6-distilled.yaml (single scale), with two steps, the fp32 release, mixed
#: precision (the transformer stays fp32 and runs under bf16 autocast) and deterministic sampling:
#: the config's stochastic sampling is in its own test below.
BASE_PIPELINE_CONFIG = {
    "pipeline_type": "base",
    "checkpoint_path": BASE_CHECKPOINT,
    "guidance_scale": 1,
    "stg_scale": 0,
    "rescaling_scale": 1,
    "timesteps": [1.0, 0.5],
    "stg_mode": "attention_values",
    "decode_timestep": 0.05,
    "decode_noise_scale": 0.025,
    "text_encoder_model_name_or_path": TEXT_ENCODER,
    "precision": "mixed_precision",
    "sampler": "from_checkpoint",
    "prompt_enhancement_words_threshold": 0,
    "prompt_enhancer_image_caption_model_name_or_path": "MiaoshouAI/Florence-2-large-PromptGen-v2.0",
    "prompt_enhancer_llm_model_name_or_path": "unsloth/Llama-3.2-3B-Instruct",
    "stochastic_sampling": False,
}
CONFIGS = {"multi-scale": PIPELINE_CONFIG, "base": BASE_PIPELINE_CONFIG}


@pytest.fixture(scope="module")
def infer_release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """conftest.py's release, with :data:`INFER_TRANSFORMER_CONFIG`."""
    t5 = _models.build_t5()
    assert t5.config.d_model == INFER_TRANSFORMER_CONFIG["caption_channels"]
    return write_release(tmp_path_factory.mktemp("ltx-infer-release"), INFER_TRANSFORMER_CONFIG, t5)


@pytest.fixture
def ltx_hub(infer_release, ltx_upsampler, tmp_path, monkeypatch):
    """A local Hub serving the release under its real repo names, HF_ENDPOINT pointing at it."""
    root = tmp_path / "repos"
    (root / "Lightricks" / "LTX-Video").mkdir(parents=True)
    # the release files' dtypes: a bf16 checkpoint, an fp32 upscaler (the pipeline's latents are fp32)
    shutil.copy(infer_release["bf16"], root / "Lightricks" / "LTX-Video" / CHECKPOINT)
    shutil.copy(infer_release["fp32"], root / "Lightricks" / "LTX-Video" / BASE_CHECKPOINT)
    shutil.copy(ltx_upsampler["fp32"], root / "Lightricks" / "LTX-Video" / UPSCALER)
    shutil.copytree(infer_release["text_encoder_repo"], root / TEXT_ENCODER)
    server = HubServer(root).start()
    point_huggingface_hub_at(server, monkeypatch)
    try:
        yield server
    finally:
        server.stop()


def _use_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


class _FrameRecorder:
    """In place of imageio's ``.mp4`` writer (no ffmpeg or pyav here): keeps the appended frames."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def __enter__(self) -> _FrameRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def append_data(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())


def run_infer(tmp: Path, config: dict, num_frames: int, *, reseed: bool = False) -> dict:
    """One ``infer()`` in ``tmp`` (its own hub cache and output folder); what it produced.

    ``reseed``: the spy seeds torch's global generator again (with ``SEED``) as the pipeline starts.
    """
    tmp.mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _run_infer(tmp, config, num_frames, reseed, monkeypatch)


def _run_infer(
    tmp: Path, config: dict, num_frames: int, reseed: bool, monkeypatch: pytest.MonkeyPatch
) -> dict:
    _use_cache(monkeypatch, tmp / "hub-cache")
    config_path = tmp / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp)  # the config names the checkpoints as bare file names, looked up here first

    calls: list[tuple[LTXVideoPipeline, torch.Tensor]] = []
    generator_states: list[torch.Tensor] = []
    original_call = LTXVideoPipeline.__call__

    def spy(self, *args, **kwargs):
        generator_states.append(torch.random.get_rng_state())
        if reseed:
            torch.manual_seed(SEED)
        result = original_call(self, *args, **kwargs)
        calls.append((self, result.images))
        return result

    mapped_by_ckptkit: list[str] = []
    original_map = FileMaps._map

    def map_spy(self, header, *args):
        mapped_by_ckptkit.append(Path(header.path).name)
        return original_map(self, header, *args)

    opened_by_ltx: list[str] = []
    for module in SAFE_OPEN_USERS:

        def open_spy(path, *args, _open=module.safe_open, **kwargs):
            opened_by_ltx.append(Path(path).name)
            return _open(path, *args, **kwargs)

        monkeypatch.setattr(module, "safe_open", open_spy)

    writers: list[_FrameRecorder] = []

    def get_writer(path, fps):
        writers.append(_FrameRecorder(path, fps))
        return writers[-1]

    monkeypatch.setattr(LTXVideoPipeline, "__call__", spy)
    monkeypatch.setattr(FileMaps, "_map", map_spy)
    if num_frames > 1:
        monkeypatch.setattr(upstream.imageio, "get_writer", get_writer)
    upstream.infer(
        upstream.InferenceConfig(
            prompt="a red cat",
            negative_prompt="a blue dog",
            output_path=str(tmp / "out"),
            pipeline_config=str(config_path),
            seed=SEED,
            height=64,
            width=64,
            num_frames=num_frames,
            frame_rate=8,
        )
    )
    written = sorted((tmp / "out").iterdir())
    if num_frames == 1:
        assert [p.suffix for p in written] == [".png"] and not writers
        frames = [np.asarray(Image.open(written[0]))]
    else:
        assert not written and [(w.path.suffix, w.fps) for w in writers] == [(".mp4", 8)]
        written, frames = [writers[0].path], writers[0].frames
    return {
        "calls": calls,
        "frames": np.stack(frames),
        "written": [p.name for p in written],
        "mapped_by_ckptkit": set(mapped_by_ckptkit),
        "opened_by_ltx": set(opened_by_ltx),
        "generator_states": generator_states,
    }


@pytest.mark.parametrize(
    ("pipeline_type", "num_frames"), [("multi-scale", 1), ("multi-scale", 9), ("base", 9)]
)
def test_infer_end_to_end_is_the_same_with_ckptkit(ltx_hub, tmp_path, pipeline_type, num_frames):
    config = CONFIGS[pipeline_type]
    theirs = run_infer(tmp_path / "upstream", config, num_frames)
    upstream_downloads = ltx_hub.downloads()
    ltx_hub.reset()
    with shim.installed():
        ours = run_infer(tmp_path / "ckptkit", config, num_frames)
    ours_downloads = ltx_hub.downloads()
    checkpoint = config["checkpoint_path"]
    weights = {checkpoint, UPSCALER} if pipeline_type == "multi-scale" else {checkpoint}

    # the same run (multi-scale: two pipeline passes), the same video and frames
    assert len(ours["calls"]) == len(theirs["calls"]) == (2 if pipeline_type == "multi-scale" else 1)
    for (_, mine), (_, reference) in zip(ours["calls"], theirs["calls"], strict=True):
        assert mine.dtype == reference.dtype and mine.shape == reference.shape
        assert torch.equal(mine, reference)
    assert ours["frames"].shape == (num_frames, 64, 64, 3)
    assert ours["frames"].dtype == np.uint8
    assert np.array_equal(ours["frames"], theirs["frames"])
    assert ours["written"] == theirs["written"]
    # a generation, not a constant image
    assert ours["frames"].std() > 0

    # both runs downloaded the checkpoint, the upscaler and the text encoder; ckptkit nothing more
    for downloads in (upstream_downloads, ours_downloads):
        assert {f"Lightricks/LTX-Video/{name}" for name in weights} <= downloads
        assert f"{TEXT_ENCODER}/text_encoder/model.safetensors" in downloads
    assert ours_downloads <= upstream_downloads

    # ckptkit's path was taken: it read every weight file, LTX-Video's own readers none
    assert ours["mapped_by_ckptkit"] == weights | {"model.safetensors"}
    assert ours["opened_by_ltx"] == set()
    assert theirs["mapped_by_ckptkit"] == set()
    assert weights <= theirs["opened_by_ltx"]
    assert upstream.create_ltx_video_pipeline.__module__ == "ltx_video.inference"  # uninstalled after


def test_infer_with_prompt_enhancement_on_is_refused_under_install(ltx_hub, tmp_path, monkeypatch):
    # LTX-Video's released configs set prompt_enhancement_words_threshold: 120, so a shorter prompt
    # turns prompt enhancement on (Florence-2 with trust_remote_code=True): refused, not run
    config = PIPELINE_CONFIG | {"prompt_enhancement_words_threshold": 120}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    _use_cache(monkeypatch, tmp_path / "hub-cache")
    monkeypatch.chdir(tmp_path)
    with shim.installed(), pytest.raises(UnsafeCheckpointError, match="trust_remote_code"):
        upstream.infer(
            upstream.InferenceConfig(
                prompt="a red cat",
                output_path=str(tmp_path / "out"),
                pipeline_config=str(tmp_path / "pipeline.yaml"),
                height=64,
                width=64,
                num_frames=1,
            )
        )
    assert not any(d.startswith(("MiaoshouAI/", "unsloth/")) for d in ltx_hub.downloads())


def test_stochastic_sampling_draws_from_the_generator_loading_leaves_alone(ltx_hub, tmp_path):
    """The one difference in output: ``stochastic_sampling: true`` (the 0.9.6-distilled configs).

    Its noise comes from torch's global generator (``RectifiedFlowScheduler.step``:
    ``torch.randn_like``), which ``infer()`` seeds before loading. Loading then advances it: LTX-Video
    builds the transformer with random weights before the checkpoint's replace them, ckptkit builds
    it empty (only the few tensors its ``__init__`` makes outside ``nn`` layers draw). So the sample
    differs; with the generator in the same state when the pipeline starts, the video is the same
    bit for bit.
    """
    config = BASE_PIPELINE_CONFIG | {"stochastic_sampling": True}
    theirs = run_infer(tmp_path / "upstream", config, 9)
    with shim.installed():
        ours = run_infer(tmp_path / "ckptkit", config, 9)
    # the generator as the pipeline starts: seeded, then advanced by what loading drew from it
    assert not torch.equal(ours["generator_states"][0], theirs["generator_states"][0])
    assert not torch.equal(ours["calls"][0][1], theirs["calls"][0][1])

    theirs = run_infer(tmp_path / "upstream-reseeded", config, 9, reseed=True)
    with shim.installed():
        ours = run_infer(tmp_path / "ckptkit-reseeded", config, 9, reseed=True)
    assert torch.equal(ours["calls"][0][1], theirs["calls"][0][1])
    assert np.array_equal(ours["frames"], theirs["frames"])
    assert ours["mapped_by_ckptkit"] and not ours["opened_by_ltx"]
