"""The CLI a newcomer meets: --version, summaries first, plans that star what fits, errors in flags."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import (
    AmbiguousCheckpointError,
    CheckpointNotFoundError,
    IncompleteCheckpointError,
    VariantNotFoundError,
    __version__,
    inspect_checkpoint,
    load_sharded,
    plan_memory,
    resave,
    resolve_ckpt_dir,
    verify_checkpoint,
)
from tests._hub import make_hub_cache
from tests._subprocess import ENV, REPO, run_cli, run_python


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ckptkit {__version__}"


# What starting the CLI may load: the parser (cli/*), sizes and display of format/, errors, version.
CLI_START_MODULES = 15


def test_cli_loads_only_the_verb_it_runs(layouts) -> None:
    # Building the parser loads no verb; `inspect` then loads its own (torch-free) verb and no other.
    code = (
        "import sys\n"
        "from ckptkit.cli import main\n"
        "def ours(): return sorted(m for m in sys.modules if m.startswith('ckptkit'))\n"
        "assert main(['--version']) == 0\n"
        "start = ours()\n"
        f"assert len(start) <= {CLI_START_MODULES}, start\n"
        "verbs = ('ckptkit.check', 'ckptkit.resolve', 'ckptkit.save', 'ckptkit.placement', 'ckptkit.load',\n"
        "         'ckptkit.distributed', 'ckptkit.io')\n"
        "assert not [m for m in start if m.startswith(verbs)], start\n"
        "assert 'torch' not in sys.modules\n"
        "assert main(['inspect', sys.argv[1], '--json']) == 0\n"
        "assert 'ckptkit.check.inspect' in sys.modules\n"
        "others = ('ckptkit.save', 'ckptkit.placement', 'ckptkit.load', 'ckptkit.distributed')\n"
        "assert not [m for m in ours() if m.startswith(others)], ours()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = run_python(code, str(layouts["t5_sharded"]))
    assert result.returncode == 0, result.stderr
    helped = run_cli("--help")
    assert helped.returncode == 0
    assert all(f" {name} " in helped.stdout for name in ("inspect", "verify", "plan", "resave", "demo"))


def test_inspect_pipeline_summary_first_files_on_request(layouts) -> None:
    plain = run_cli("inspect", str(layouts["pipeline"]))
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[1].split() == ["scheduler", "diffusers.DPMSolverMultistepScheduler"]
    assert "vae/config.json" not in plain.stdout and "list them with --files" in plain.stdout
    assert "* diffusion_pytorch_model.safetensors.index.json (4 shards, safetensors)" in plain.stdout
    with_files = run_cli("inspect", str(layouts["pipeline"]), "--files")
    listed = [line for line in with_files.stdout.splitlines() if line.endswith("vae/config.json")]
    assert len(listed) == 1, "each file once"
    summary_at = with_files.stdout.index("AutoencoderKL")
    assert summary_at < with_files.stdout.index("vae/config.json"), "summary before files"


def _sparse_checkpoint(directory: Path, gib: int, blocks: int = 30) -> Path:
    """A safetensors file whose header describes ``gib`` GiB of bf16 in ``blocks`` blocks, stored sparse."""
    per_block = gib * 2**30 // blocks // 2  # bf16 elements per block
    header, offset = {}, 0
    for i in range(blocks):
        header[f"blocks.{i}.weight"] = {
            "dtype": "BF16",
            "shape": [per_block],
            "data_offsets": [offset, offset + per_block * 2],
        }
        offset += per_block * 2
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    directory.mkdir(parents=True)
    path = directory / "diffusion_pytorch_model.safetensors"
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)  # no data written: a sparse file of the right size
    return directory


def test_plan_stars_only_a_strategy_that_fits(tmp_path) -> None:
    ckpt = _sparse_checkpoint(tmp_path / "dit", gib=30)
    plan = plan_memory(ckpt, devices=1, device_memory="24GiB")
    assert plan.fitting == ["offload"] and plan.strategy == "offload" and plan.fits
    assert "offload fits" in repr(plan)
    human = run_cli("plan", str(ckpt), "--device-memory", "24GiB")
    assert human.returncode == 0, human.stderr
    starred = [line.split()[1] for line in human.stdout.splitlines() if line.lstrip().startswith("* ")]
    assert starred == ["offload", "offload"], human.stdout  # the table row and the verdict
    asked = run_cli("plan", str(ckpt), "--device-memory", "24GiB", "--strategy", "replicate")
    assert asked.returncode == 1
    assert not [line for line in asked.stdout.splitlines() if line.lstrip().startswith("* ")]
    assert "replicate does NOT fit; fits: offload (--strategy offload)" in asked.stdout


def _tiny_pth(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2, 2)}, path)


def test_plan_wan_a14b_names_the_expert_folders(tmp_path) -> None:
    root = tmp_path / "Wan2.2-T2V-A14B"
    _tiny_pth(root / "models_t5_umt5-xxl-enc-bf16.pth")
    _tiny_pth(root / "Wan2.1_VAE.pth")
    for expert in ("high_noise_model", "low_noise_model"):
        (root / expert).mkdir()
        save_file(
            {"blocks.0.weight": torch.zeros(4, 4)}, root / expert / "diffusion_pytorch_model.safetensors"
        )
    with pytest.raises(AmbiguousCheckpointError, match="high_noise_model/, low_noise_model/") as caught:
        plan_memory(root, device_memory="24GiB")
    assert "subfolder= one of: 'high_noise_model', 'low_noise_model'" in str(caught.value)
    cli = run_cli("plan", str(root), "--device-memory", "24GiB")
    assert cli.returncode == 1
    assert "--subfolder one of: 'high_noise_model', 'low_noise_model'" in cli.stderr, cli.stderr
    ok = run_cli("plan", str(root), "--subfolder", "low_noise_model", "--device-memory", "24GiB")
    assert ok.returncode == 0, ok.stderr


def test_plan_s2v_names_the_weight_set_and_the_others(tmp_path) -> None:
    root = tmp_path / "Wan2.2-S2V-14B"
    root.mkdir()
    save_file({"blocks.0.weight": torch.zeros(4, 4)}, root / "diffusion_pytorch_model.safetensors")
    _tiny_pth(root / "models_t5_umt5-xxl-enc-bf16.pth")
    plan = plan_memory(root, device_memory="24GiB")
    assert plan.weight_set == "diffusion_pytorch_model.safetensors"
    assert plan.passed_over == ["models_t5_umt5-xxl-enc-bf16.pth"]
    cli = run_cli("plan", str(root), "--device-memory", "24GiB")
    assert "weight set diffusion_pytorch_model.safetensors" in cli.stdout
    assert "not counted: models_t5_umt5-xxl-enc-bf16.pth" in cli.stdout


def test_cli_errors_name_flags_python_errors_name_keywords(tmp_path) -> None:
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "step": 3}, wrapped)
    with pytest.raises(Exception, match="unwrap='state_dict'"):
        resave(wrapped, tmp_path / "py")
    cli = run_cli("resave", str(wrapped), str(tmp_path / "out"))
    assert cli.returncode == 1
    assert "--unwrap state_dict" in cli.stderr and "unwrap=" not in cli.stderr, cli.stderr
    fixed = run_cli("resave", str(wrapped), str(tmp_path / "out"), "--unwrap", "state_dict")
    assert fixed.returncode == 0, fixed.stderr
    assert [p.name for p in (tmp_path / "out").glob("*.safetensors")] == ["ckpt.safetensors"]


# Keywords whose flag is spelled otherwise: the negative of a default-on switch, a plural as a
# repeatable flag, a choice as a switch.
_FLAG_OF = {
    "progress": "--no-progress",
    "fsync": "--no-fsync",
    "copy_other_files": "--no-copy-other-files",
    "manifest": "--no-manifest",
    "local_files_only": "--offline",
    "allow_patterns": "--allow-pattern",
    "weight_sets": "--selected",
    "no_split_prefixes": "--no-split",
}


def test_every_python_option_has_a_flag() -> None:
    import inspect as pyinspect

    from ckptkit import materialize as materialize_fn
    from ckptkit.cli import build_parser
    from ckptkit.placement.device_map import plan_device_map

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}
    verbs = {
        "resolve": [resolve_ckpt_dir],
        "inspect": [inspect_checkpoint],
        "verify": [verify_checkpoint],
        "plan": [plan_memory, plan_device_map],
        "resave": [resave],
        "materialize": [materialize_fn],
    }
    for command, functions in verbs.items():
        for function in functions:
            for name, parameter in pyinspect.signature(function).parameters.items():
                if parameter.kind is not parameter.KEYWORD_ONLY:
                    continue  # positional: the command's arguments; **resolve_kwargs: the source flags
                if name in ("compresslevel",):
                    flag = "--compresslevel"
                else:
                    flag = _FLAG_OF.get(name, "--" + name.replace("_", "-"))
                assert flag in flags[command], (
                    f"ckptkit {command} has no {flag} for {function.__name__}({name}=)"
                )
    for command in ("inspect", "verify", "plan"):  # what their **resolve_kwargs take
        assert {"--revision", "--cache-dir", "--offline", "--subfolder"} <= flags[command], command


def test_broken_pipe_exits_quietly(layouts) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ckptkit", "inspect", str(layouts["pipeline"]), "--files"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    process.stdout.close()  # the reader is gone before the first line, as with `| head -0`
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)
    assert "Broken pipe" not in stderr and "Traceback" not in stderr, stderr


def test_archive_is_refused_saying_what_it_is(layouts, tmp_path) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(layouts["t5_single"], arcname=".")
    with pytest.raises(CheckpointNotFoundError, match="gzip") as caught:
        inspect_checkpoint(archive)
    assert "tar -xzf" in str(caught.value)
    with pytest.raises(CheckpointNotFoundError, match="gzip"):
        verify_checkpoint(archive)
    cli = run_cli("verify", str(archive))
    assert cli.returncode == 1 and "gzip" in cli.stderr and "problems" not in cli.stdout
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointNotFoundError, match="not a weights file"):
        inspect_checkpoint(tmp_path / "notes.txt")


def test_snapshot_copied_out_of_its_cache_is_named(layouts, tmp_path) -> None:
    snapshot = make_hub_cache(layouts["t5_single"], tmp_path / "hub")
    copy = tmp_path / "copied"
    shutil.copytree(snapshot, copy, symlinks=True)  # what `cp -a` does
    info = inspect_checkpoint(copy)
    assert any("copied out of its cache" in p.message for p in info.problems), info.problems
    with pytest.raises(IncompleteCheckpointError, match="copied out of its cache"):
        load_sharded(copy)
    shutil.rmtree(snapshot.parent.parent / "blobs")
    in_cache = inspect_checkpoint(snapshot)
    assert any("interrupted or the cache was cleaned" in p.message for p in in_cache.problems)


def test_variant_error_says_plainly_what_exists(layouts) -> None:
    with pytest.raises(VariantNotFoundError) as caught:
        resolve_ckpt_dir(layouts["t5_sharded"], variant="fp16", variant_fallback="error")
    message = str(caught.value)
    assert "there are only the default weights" in message
    assert "pass variant=None (the default weights)" in message and "one of: default" not in message


def test_resolve_says_where_it_looked_before_the_fix(tmp_path) -> None:
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve_ckpt_dir("org/absent", cache_dir=tmp_path, local_files_only=True)
    message = str(caught.value)
    assert "looked in:" in message and message.index("looked in:") < message.index("Fix:")
    assert "Fix: looked in" not in message


def test_weights_name_names_the_output(layouts, tmp_path) -> None:
    ckpt = resave(layouts["pixart"], tmp_path / "out", weights_name="model", progress=False)
    assert sorted(p.name for p in ckpt.weight_files) == ["model.safetensors"]


def test_demo_runs_offline(tmp_path) -> None:
    env = {**ENV, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "ckptkit", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in (
        "1. build",
        "2. resolve",
        "3. inspect",
        "4. load",
        "5. resave",
        "6. verify",
        "Next, on a real model",
    ):
        assert step in out, step
    assert "variant=fp16, 2 files (sharded)" in out
    assert "diffusion_pytorch_model.fp16.safetensors" in out  # the one file
    assert out.count(": OK,") == 2 and "0 with no recorded digest" in out
    assert (tmp_path / "demo" / "transformer-one-file" / "SHA256SUMS").is_file()


def _run_on_a_tty(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal 100 columns wide; returns (exit code, stderr)."""
    import fcntl
    import os
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {key: value for key, value in ENV.items() if key != "HF_HUB_DISABLE_PROGRESS_BARS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ckptkit", *args], stdout=subprocess.DEVNULL, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_resave_and_materialize_show_bars_on_a_terminal(layouts, tmp_path) -> None:
    code, stderr = _run_on_a_tty(
        "resave", str(layouts["pixart"]), str(tmp_path / "one"), "--max-shard-size", "none"
    )
    assert code == 0 and "resave: 100%" in stderr, stderr
    code, stderr = _run_on_a_tty(
        "materialize", str(layouts["pixart"]), str(tmp_path / "m.tar"), "--archive", "tar"
    )
    assert code == 0 and "materialize: 100%" in stderr, stderr
    piped = run_cli("resave", str(layouts["pixart"]), str(tmp_path / "two"), "--max-shard-size", "none")
    assert piped.returncode == 0 and "resave:" not in piped.stderr
