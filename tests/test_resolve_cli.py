"""``ckptkit resolve``: prints only the directory, so ``--ckpt_dir "$(ckptkit resolve ...)"`` works."""

from __future__ import annotations

import json

from ckptkit.cli import main
from tests._hub import HF_DOWNLOAD


def test_prints_only_the_directory(hub, hub_cache, capsys):
    code = main(
        ["resolve", "org/pipe", "--subfolder", "vae", "--variant", "fp16", "--cache-dir", str(hub_cache)]
    )
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    snapshot = hub_cache / "models--org--pipe" / "snapshots" / hub.commit("org/pipe")
    assert out == f"{snapshot / 'vae'}\n"


def test_json_and_offline(hub, hub_cache, capsys):
    main(["resolve", "org/t5", "--cache-dir", str(hub_cache)])
    capsys.readouterr()
    hub.reset()
    code = main(["resolve", "org/t5", "--cache-dir", str(hub_cache), "--offline", "--json"])
    out, _ = capsys.readouterr()
    info = json.loads(out)
    assert code == 0 and hub.requests == []
    assert info["repo_id"] == "org/t5" and info["revision"] == hub.commit("org/t5")
    assert info["weight_files"][0].endswith("/model-00001-of-00005.safetensors")


def test_offline_miss_exits_1_with_the_fetch_command(hub, hub_cache, capsys):
    code = main(["resolve", "org/vae", "--cache-dir", str(hub_cache), "--offline"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and hub.requests == []
    assert "CheckpointNotFoundError" in err and f"{HF_DOWNLOAD} org/vae" in err


def test_local_directory_and_warning_on_stderr(layouts, capsys):
    code = main(["resolve", str(layouts["t5_fp16_only"])])
    out, err = capsys.readouterr()
    assert code == 0 and out == f"{layouts['t5_fp16_only']}\n"
    assert "warning: " in err and "fp16" in err
