"""Developer sessions. Each installs the pinned CPU torch first so nothing pulls a CUDA build."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

TORCH = "torch==2.13.0"
#: The upstream releases the conformance tests run the shims against.
UPSTREAM = ("ltx-video==0.1.2", "wan22==2.2.11")


#: The library stacks the test suite runs under (``nox -s compat``): the newest releases, and pinned
#: older stacks, each a constraints file that pins huggingface_hub, transformers, diffusers,
#: accelerate, tokenizers and sentencepiece.
COMPAT_STACKS = {
    "newest": None,
    # what ltx-video pins (huggingface-hub~=0.30, transformers>=4.47.2,<4.52)
    "ltx": ".ci/compat/ltx.txt",
    # the floors pyproject.toml declares
    "floor": ".ci/compat/floor.txt",
}


def _install(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{','.join(extras)}]" if extras else ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (the README's test command)."""
    _install(session, "hf", "dev")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
@nox.parametrize("stack", [nox.param(name, id=name) for name in COMPAT_STACKS])
def compat(session: nox.Session, stack: str) -> None:
    """The test suite under one library stack: torch first, then the pinned stack, then ckptkit.

    The pins are constraints for the last step too, so installing ckptkit upgrades none of them.
    Arguments after ``--`` go to pytest; CI (``.ci/run``) runs the whole suite on the ltx and floor stacks.
    """
    pins = COMPAT_STACKS[stack]
    session.install(TORCH)
    if pins is None:
        session.install("-e", ".[hf,dev]")
    else:
        session.install("-r", pins, "-c", pins)
        session.install("-c", pins, "-e", ".[hf,dev]")
    session.run(
        "python",
        "-c",
        "from importlib.metadata import version; print(*(f'{p}=={version(p)}' for p in "
        "('torch', 'huggingface_hub', 'transformers', 'diffusers', 'accelerate', 'tokenizers')))",
    )
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    _install(session, "dev")
    session.run("mypy", "ckptkit")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    _install(session, "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks and rewrite docs/benchmarks.md (takes minutes; needs ~6 GiB of disk)."""
    _install(session, "hf", "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)
    session.run("python", "benchmarks/bench_placement.py", "--write-docs")
    session.run("python", "benchmarks/bench_distributed.py", "--write-docs")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the header and index parsers with atheris (default 60 s; pass libFuzzer flags after --)."""
    _install(session, "fuzz")
    args = session.posargs or ["-max_total_time=60"]
    session.run("python", "fuzz/fuzz_parsers.py", *args, env={"PYTHONPATH": "."})


@nox.session
def conformance(session: nox.Session) -> None:
    """The shims against the real upstream loaders (tests/conformance/).

    Installs ltx-video 0.1.2 and wan22 2.2.11 with ``--no-deps`` (they pin ``flash_attn``,
    ``huggingface-hub~=0.30``, ``transformers<4.52``, ...) on top of this project's stack plus the few
    imports their loader modules need (the ``conformance`` extra). What cannot import on a CPU
    machine is stubbed by tests/conformance/_upstream.py, and nothing else:

    - ``torch.cuda.current_device`` while ``wan.modules.t5`` is imported (it is a default argument);
    - the modules ``torchvision`` (the registry's wheel links CUDA builds of torch), ``cv2``, ``av``,
      ``decord``, ``librosa``, ``peft``: imported by ``wan/__init__`` and ``ltx_video.inference``
      for video I/O, audio and LoRA, never called on a loading path (calling them raises);
    - the CUDA-only ``flash_attention`` kernel Wan's DiT and CLIP call, replaced in forward-pass
      checks by Wan's own ``attention`` (its scaled-dot-product fallback), and ``flash_attn_func`` of
      Wan-Animate's face blocks by torch's SDPA;
    - ``torchvision.transforms`` inside Wan's CLIP module, by records of the transforms it builds
      (loading builds them; only ``CLIPModel.visual`` would run them).
    - in the end-to-end run of LTX-Video's ``infer()`` (tests/conformance/ltx/test_infer.py), its
      ``.mp4`` writer ``imageio.get_writer`` (needs ffmpeg or pyav), by a recorder of the frames;
      a single frame is written as a ``.png`` by imageio itself.

    tests/conformance/opensora/ needs no upstream package and also runs in the main suite.

    The docs' blocks that need LTX-Video or Wan (``conformance=`` in tests/test_docs_snippets.py's
    ``SETUP``) run here as written, in tests/conformance/{ltx,wan}/test_guide.py, on tiny checkpoints
    in the upstream formats. Open-Sora does not install: its guide's blocks run in the main suite in
    a stand-in checkout whose loaders are the vendored upstream copies (tests/_opensora_repo.py).
    """
    _install(session, "conformance")
    session.install("--no-deps", *UPSTREAM)
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "tests/conformance",
        *session.posargs,
        env={"CKPTKIT_CONFORMANCE": "1"},
    )
