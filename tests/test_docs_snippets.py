"""Every ```python and ```bash block of README.md and docs/ runs as written, page by page.

A reader follows a page top to bottom in one directory, so each page's blocks run in order in a
fresh copy of a small world of tiny stand-ins (``WORLD`` below): the paths the docs name
(``./pixart``, ``./t5``, ``./sdxl/unet``, ``./Wan2.1-T2V-14B``, ...) hold tiny real checkpoints saved
by transformers and diffusers, and ``~/.cache/huggingface/hub`` holds the repos the docs name
(``PixArt-alpha/PixArt-XL-2-1024-MS``, ``org/name``, ...), with ``HF_HUB_OFFLINE=1``. ``ckptkit`` and
``python`` on ``PATH`` are this checkout and this interpreter.

Where a block cannot run as written here, ``SETUP`` says so next to it, keyed by page and block
number, with what the block must contain (so a stale entry fails): text replacements for
placeholders (a host name, ``<commit>``, an absolute path), a ``prelude`` that defines what the
page's prose says the reader has (``model``, ``ckpt_path``), ``torchrun`` for a multi-process block,
``ci`` for install commands (``.ci/run`` runs them on a clean clone: the test checks it does),
and ``conformance`` for a block that needs LTX-Video or Wan installed (the "before" of a migration,
a patch of that package): ``tests/conformance/<name>/test_guide.py`` runs it in ``nox -s conformance``,
against tiny checkpoints in the upstream formats; here it must compile. Open-Sora does not install:
its guide's blocks run here, in a stand-in Open-Sora checkout whose loaders are the vendored upstream
copies (``tests/_opensora_repo.py``). A block that runs nowhere says why in ``not_run`` (the one
place that lists them) and must still compile (``bash -n`` for shell); ``test_every_block_runs``
fails on any other kind of block that is not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from ckptkit.resolve.hub_misses import hf_cli
from tests._hub import COMMIT, make_hub_cache
from tests._opensora_repo import PRELUDE as OPENSORA
from tests._opensora_repo import build_opensora_repo
from tests._subprocess import REPO
from tests._versions import has_diffusers_classes

PAGES = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^```(python|bash)[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass
class Setup:
    contains: str  # text the block must hold: the entry is about that block and no other
    replace: dict[str, str] = field(default_factory=dict)
    prelude: str = ""
    torchrun: bool = False
    ci: bool = False
    conformance: str = ""  # "ltx" / "wan": run by tests/conformance/<name>/test_guide.py instead
    not_run: str = ""  # why the block runs nowhere (it is compiled only)

    def runs_here(self) -> bool:
        return not (self.ci or self.conformance or self.not_run)


_ARGS = "import argparse\nargs = argparse.Namespace(ckpt_dir='./Wan2.1-T2V-14B')"
# "cluster" is a placeholder host: the copy is made to a local folder standing for it
_CLUSTER = {
    "rsync -a ./pixart cluster:/models/": 'cp -a ./pixart "$CLUSTER/models/"',
    "ssh cluster ckptkit verify /models/pixart": 'ckptkit verify "$CLUSTER/models/pixart"',
}

_CPU = {'device="cuda"': 'device="cpu"'}
#: what Wan's text2video.py has when it loads (the A14B text-to-video config, on the CPU)
_WAN_CONFIG = (
    "import argparse, os, torch\nfrom wan.configs import WAN_CONFIGS\n"
    "config = WAN_CONFIGS['t2v-A14B']\ncheckpoint_dir = './Wan2.2-T2V-A14B'\ndevice = torch.device('cpu')"
)

SETUP: dict[tuple[str, int], Setup] = {
    ("README.md", 0): Setup('pip install ".[hf]"', ci=True),
    ("README.md", 1): Setup('pip install "torch==2.13.0" -e ".[hf,dev]"', ci=True),
    ("docs/index.md", 0): Setup('pip install ".[hf]"', ci=True),
    ("docs/index.md", 1): Setup('pip install "torch==2.13.0" -e ".[hf,dev]"', ci=True),
    ("docs/index.md", 4): Setup("snapshots/<commit>", replace={"<commit>": COMMIT}),
    # /export/hub stands for the cache to export: the stand-in cache is that cache (offline, it is all there is);
    # before huggingface_hub 0.34 (no `hf`) the same commands run as the page's comment says: huggingface-cli
    ("docs/guides/air-gapped.md", 0): Setup(
        "huggingface-cli download",
        replace={"/export/hub": "$HOME/.cache/huggingface/hub", "hf download": hf_cli("download")},
    ),
    ("docs/guides/air-gapped.md", 2): Setup("rsync", replace=_CLUSTER),
    ("docs/guides/air-gapped.md", 4): Setup(
        '"/models/pixart"', replace={'"/models/pixart"': '"./cluster/models/pixart"'}
    ),
    ("docs/guides/sagemaker.md", 0): Setup("<commit>", replace={"<commit>": COMMIT}),
    ("docs/guides/sagemaker.md", 3): Setup("/opt/ml/model", replace={'"/opt/ml/model"': '"./model-dir"'}),
    ("docs/distributed.md", 0): Setup("load_sharded_distributed", torchrun=True),
    # LTX-Video and Wan installed: nox -s conformance (no GPU there: "cuda" is the CPU)
    ("docs/guides/ltx-video.md", 1): Setup("from ltx_video.inference", conformance="ltx", replace=_CPU),
    ("docs/guides/ltx-video.md", 2): Setup("ckptkit.shims.ltx.install()", conformance="ltx", replace=_CPU),
    ("docs/guides/wan.md", 1): Setup("from wan.modules.t5", conformance="wan", prelude=_WAN_CONFIG),
    ("docs/guides/wan.md", 2): Setup(
        "wan.WanT2V(",
        not_run="wan.WanT2V puts its VAE on cuda:<device_id> (Wan has no CPU path) and CI has no GPU; "
        "the loads WanT2V makes run under install() in tests/conformance/wan/test_wan.py "
        "(test_install_runs_wans_own_code_on_ckptkit), on Wan's own classes",
    ),
    ("docs/guides/wan.md", 3): Setup("liveavatar", conformance="wan"),
    # in the stand-in Open-Sora checkout (tests/_opensora_repo.py), with the names its prose gives
    ("docs/guides/open-sora.md", 1): Setup(
        "ColossalAI booster dir",
        replace=_CPU,
        prelude=OPENSORA + "from ckptkit.shims.opensora import T5Encoder, load_checkpoint",
    ),
    ("docs/guides/open-sora.md", 2): Setup(
        'device_map="cuda"',
        replace={'device_map="cuda"': 'device_map="cpu"'},
        prelude=OPENSORA + "from ckptkit.shims.opensora import load_checkpoint_v2 as load_checkpoint",
    ),
    ("docs/guides/open-sora.md", 3): Setup(
        "build_module(cfg.model, MODELS)",
        prelude="from types import SimpleNamespace\nfrom opensora.registry import MODELS, build_module\n"
        "cfg = SimpleNamespace(model=dict(type='STDiT3-XL/2', from_pretrained='./stdit3-4ch.pt', "
        "adapt_16ch=True, in_channels=16))",
    ),
    ("docs/guides/open-sora.md", 5): Setup(
        "cache_dir=cache_dir",
        prelude="import os\nfrom tests._models import build_t5\n"
        "cache_dir = os.path.expanduser('~/.cache/huggingface/hub')\nmodel = build_t5()\nckpt_path = './t5'",
    ),
    ("docs/guides/wan.md", 0): Setup("args.ckpt_dir", prelude=_ARGS),
    ("docs/guides/wan.md", 4): Setup(
        "meta_model",
        prelude="from accelerate import init_empty_weights\nfrom diffusers import WanTransformer3DModel\n"
        "checkpoint_dir = './Wan2.1-T2V-14B'\nwith init_empty_weights():\n"
        "    meta_model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(checkpoint_dir))",
    ),
    ("docs/index.md", 9): Setup("python examples/", replace={"python examples/": 'python "$REPO"/examples/'}),
    # no GPU here: the budget is CPU only, small enough that the tiny DiT also spills to disk
    ("docs/placement.md", 0): Setup(
        "max_memory={0:",
        replace={
            'max_memory={0: "20GiB", "cpu": "64GiB"}': 'max_memory={"cpu": "40KB"}',
            "/tmp/wan-offload": "./wan-offload",
        },
    ),
    ("docs/load.md", 0): Setup(
        "accelerate.init_empty_weights", prelude="import accelerate\nfrom diffusers import AutoencoderKL"
    ),
    ("docs/placement.md", 1): Setup(
        "load_with_device_map(",
        replace={"0=20GiB,cpu=64GiB": "cpu=40KB", "/tmp/off": "./off"},
        prelude="from accelerate import init_empty_weights\nfrom diffusers import WanTransformer3DModel\n"
        "from ckptkit import load_with_device_map\nwith init_empty_weights():\n"
        "    model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config('./wan/transformer'))",
    ),
}


@dataclass
class Snippet:
    page: str
    number: int
    language: str
    code: str


def snippets(page: str) -> list[Snippet]:
    text = (REPO / page).read_text()
    return [Snippet(page, i, m.group(1), m.group(2)) for i, m in enumerate(_BLOCK.finditer(text))]


def test_setup_entries_name_existing_blocks() -> None:
    for (page, number), setup in SETUP.items():
        found = snippets(page)
        assert number < len(found), f"{page} has no block {number}"
        assert setup.contains in found[number].code, (
            f"{page} block {number} no longer holds {setup.contains!r}"
        )
        for old in setup.replace:
            assert old in found[number].code, f"{page} block {number}: nothing to replace for {old!r}"


def test_every_block_runs() -> None:
    """Each block runs here, in .ci/run (``ci``) or in nox -s conformance, or ``not_run`` says why."""
    for (page, number), setup in SETUP.items():
        kinds = [kind for kind in (setup.ci, setup.conformance, setup.not_run) if kind]
        assert len(kinds) <= 1, f"{page} block {number}: one of ci, conformance, not_run"
        if setup.conformance:
            runner = REPO / "tests" / "conformance" / setup.conformance / "test_guide.py"
            assert runner.is_file(), f"{page} block {number}: no {runner.relative_to(REPO)} runs it"
            assert "conformance_blocks(" in runner.read_text(), f"{runner} does not run SETUP's blocks"
        assert not setup.not_run or len(setup.not_run.split()) >= 3, f"{page} block {number}: say why"


def conformance_blocks(name: str) -> list[tuple[Snippet, Setup]]:
    """The blocks ``tests/conformance/<name>/test_guide.py`` runs (upstream installed)."""
    return [
        (snippets(page)[number], setup)
        for (page, number), setup in SETUP.items()
        if setup.conformance == name
    ]


def run_block(
    snippet: Snippet, setup: Setup, root: Path, cwd: Path, prelude: str = "", checks: str = ""
) -> None:
    """Runs one block as the page test does (``root/home`` is HOME), after ``prelude``, then ``checks``."""
    where = f"{snippet.page} block {snippet.number}"
    code = f"{snippet.code}\n# -- checks of {where} --\n{checks}" if checks else snippet.code
    result = _run(
        replace(snippet, code=code), replace(setup, prelude=prelude + setup.prelude), cwd, _env(root, cwd)
    )
    assert result.returncode == 0, (
        f"{where} failed:\n{snippet.code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def test_install_commands_are_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    for (page, number), setup in SETUP.items():
        if setup.ci:
            for line in snippets(page)[number].code.splitlines():
                command = line.split("#")[0].strip()
                if command:
                    assert command in ci, f"{page} block {number}: .ci/run does not run `{command}`"


# -- the world of stand-ins -------------------------------------------------------------------------


#: Model families whose diffusers classes the oldest supported diffusers (0.31) lacks: where they are
#: missing (``nox -s compat``), no stand-in is built and a block that names the family is skipped.
FAMILIES = {
    "Wan": (re.compile(r"wan", re.I), ("WanTransformer3DModel", "AutoencoderKLWan")),
    "LTX-Video": (re.compile(r"ltx", re.I), ("LTXVideoTransformer3DModel", "AutoencoderKLLTXVideo")),
}


def _missing_families() -> set[str]:
    return {name for name, (_, classes) in FAMILIES.items() if not has_diffusers_classes(*classes)}


def _save_tokenizer(directory: Path) -> None:
    from tests._models import build_tokenizer

    build_tokenizer().save_pretrained(directory)


def _wan(directory: Path) -> None:
    from tests._models import build_umt5, build_wan_dit, build_wan_vae

    directory.mkdir(parents=True)
    build_wan_dit().save_pretrained(directory, max_shard_size="30KB")
    torch.save(build_umt5().to(torch.bfloat16).state_dict(), directory / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(build_wan_vae().state_dict(), directory / "Wan2.1_VAE.pth")
    _save_tokenizer(directory / "google" / "umt5-xxl")


def _ltx_single(path: Path) -> None:
    from safetensors.torch import save_file

    from tests._models import build_ltx_dit, build_ltx_vae

    dit, vae = build_ltx_dit(), build_ltx_vae()
    config = {
        "transformer": dict(dit.config),
        "vae": dict(vae.config),
        "scheduler": {"_class_name": "RectifiedFlowScheduler", "shifting": "SD3"},
    }
    state = {f"model.diffusion_model.{k}": v for k, v in dit.state_dict().items()}
    state |= {f"vae.{k}": v for k, v in vae.state_dict().items()}
    save_file(state, path, metadata={"config": json.dumps(config, default=list), "format": "pt"})


def _dcp(directory: Path) -> None:
    import torch.distributed.checkpoint as dcp

    from tests._models import build_t5

    dcp.save({"model": build_t5().state_dict()}, checkpoint_id=str(directory))


@pytest.fixture(scope="session")
def world(layouts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``home/`` (with the hub cache) and ``work/`` (the paths the docs name), built once."""
    from tests._models import build_pixart

    root = tmp_path_factory.mktemp("docs-world")
    home, work = root / "home", root / "work"
    work.mkdir(parents=True)
    pipeline = root / "pipeline"
    shutil.copytree(layouts["pipeline"], pipeline)
    build_pixart().half().save_pretrained(pipeline / "transformer", variant="fp16")
    _save_tokenizer(pipeline / "tokenizer")
    t5 = root / "t5"
    shutil.copytree(layouts["t5_variants"], t5)
    _save_tokenizer(t5)
    missing = _missing_families()
    wan = root / "wan"
    if "Wan" not in missing:
        _wan(wan)

    cache = home / ".cache" / "huggingface" / "hub"
    for repo_id, source in build_opensora_repo(root / "open-sora").items():
        make_hub_cache(source, cache, repo_id=repo_id)
    for repo_id, source in {
        "PixArt-alpha/PixArt-XL-2-1024-MS": pipeline,
        "org/name": pipeline,
        "DeepFloyd/t5-v1_1-xxl": t5,
        "Wan-AI/Wan2.1-T2V-14B": wan,
        "stabilityai/stable-diffusion-xl-base-1.0": pipeline,
    }.items():
        if source.exists():
            make_hub_cache(source, cache, repo_id=repo_id)

    shutil.copytree(pipeline, work / "pixart")
    shutil.copytree(pipeline, work / "sd")
    shutil.copytree(t5, work / "t5")
    shutil.copytree(layouts["vae_variants"], work / "sdxl" / "unet")
    (work / "wan").mkdir()
    if wan.exists():
        shutil.copytree(wan, work / "Wan2.1-T2V-14B")
        shutil.copytree(wan, work / "wan" / "transformer", ignore=shutil.ignore_patterns("*.pth", "google"))
    (work / "hub-snapshot").symlink_to(cache / "models--org--name" / "snapshots" / COMMIT)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(work / "llama", max_shard_size="100KB")
    if "LTX-Video" not in missing:
        _ltx_single(work / "ltxv-13b-0.9.7-dev.safetensors")
        shutil.copy(work / "ltxv-13b-0.9.7-dev.safetensors", work / "ltxv-2b-0.9.8-distilled.safetensors")
        shutil.copy(
            work / "ltxv-13b-0.9.7-dev.safetensors", work / "pipeline.safetensors"
        )  # holds vae.* keys
    else:
        from safetensors.torch import save_file

        state = {f"vae.{k}": v.contiguous() for k, v in build_pixart().state_dict().items()}
        save_file(state | {"model.scale": torch.ones(2)}, work / "pipeline.safetensors")
    _dcp(work / "step-1000")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in build_pixart().state_dict().items()}}, work / "ckpt.pt"
    )

    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "ckptkit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ckptkit "$@"\n')
    (bin_dir / "ckptkit").chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # keeps the venv
    (bin_dir / "python").chmod(0o755)
    for cli in ("hf", "huggingface-cli"):  # the installed huggingface_hub's command-line tools
        if (Path(sys.executable).parent / cli).exists():
            (bin_dir / cli).symlink_to(Path(sys.executable).parent / cli)
    return root


# -- running a page ---------------------------------------------------------------------------------


def _env(world: Path, cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "CKPTKIT_"))}
    env.update(
        HOME=str(world / "home"),
        PATH=f"{world / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        CLUSTER=str(cwd / "cluster"),
        REPO=str(REPO),
    )
    return env


def _run(snippet: Snippet, setup: Setup, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = snippet.code
    for old, new in setup.replace.items():
        code = code.replace(old, new)
    where = f"{snippet.page} block {snippet.number}"
    if snippet.language == "bash":
        return subprocess.run(
            ["bash", "-eu", "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
    script = cwd / f"_block_{snippet.number}.py"
    script.write_text(f"{setup.prelude}\n# -- {where}, as written --\n{code}")
    if setup.torchrun:  # two CPU processes; --standalone picks a free port
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
        ]
    else:
        command = [sys.executable, str(script)]
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        script.unlink()


@pytest.mark.parametrize("page", PAGES)
def test_page_snippets_run(page: str, world: Path, tmp_path: Path) -> None:
    blocks = snippets(page)
    if not blocks:
        assert not _BLOCK.search((REPO / page).read_text())
        return
    cwd = tmp_path / "work"
    shutil.copytree(world / "work", cwd, symlinks=True)
    (cwd / "cluster" / "models").mkdir(parents=True)
    if page == "docs/guides/open-sora.md":  # the reader is in an Open-Sora checkout
        shutil.copytree(world / "open-sora", cwd, dirs_exist_ok=True)
    env = _env(world, cwd)
    missing = _missing_families()
    for snippet in blocks:
        setup = SETUP.get((page, snippet.number), Setup(""))
        needs = sorted(name for name in missing if FAMILIES[name][0].search(snippet.code))
        if needs and setup.runs_here():
            import diffusers

            pytest.skip(
                f"{page} block {snippet.number} needs {', '.join(needs)} classes that diffusers "
                f"{diffusers.__version__} does not have (blocks before it ran)"
            )
        if setup.ci:
            continue  # checked against .ci/run above
        if setup.conformance or setup.not_run:  # run by nox -s conformance / run nowhere: compiled
            if snippet.language == "python":
                compile(snippet.code, f"{page} block {snippet.number}", "exec")
            else:
                syntax = subprocess.run(["bash", "-n", "-c", snippet.code], capture_output=True, text=True)
                assert syntax.returncode == 0, f"{page} block {snippet.number}: {syntax.stderr}"
            continue
        result = _run(snippet, setup, cwd, env)
        assert result.returncode == 0, (
            f"{page} block {snippet.number} failed:\n{snippet.code}\n--- stdout\n{result.stdout[-3000:]}"
            f"\n--- stderr\n{result.stderr[-3000:]}"
        )
