"""Hostile inputs, round 2: each family of attacks (or careless inputs) closed as a class.

Every case: a typed ``CkptError`` naming the file (or a ``ValueError`` naming the caller's
argument), an answer within a bounded time (a hang fails the test instead of the suite), nothing
written outside the destination, the source tree unchanged (hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import struct
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from ckptkit import inspect_checkpoint, load_sharded, materialize, resave, resolve_ckpt_dir, verify_checkpoint
from ckptkit.errors import (
    CkptError,
    CorruptCheckpointError,
    DestinationExistsError,
    IncompleteCheckpointError,
    UnsafeCheckpointError,
)
from ckptkit.format.safetensors_header import read_header
from ckptkit.format.torch_pickle import MAX_PICKLE_SIZE, scan_torch_file
from ckptkit.io import locks
from tests._subprocess import run_cli

#: Seconds any verb may take on one hostile case (they take well under one; a hang takes forever).
BOUND = 20.0


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not HF_HUB_OFFLINE: huggingface_hub reads it once, at import, for the rest of the session.
    # Nothing here is a hub id; every case is refused before a request could be made.
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("CKPTKIT_CONFINE", raising=False)


def bounded(fn: Callable[[], Any], seconds: float = BOUND) -> tuple[Any, BaseException | None]:
    """Run ``fn`` in a daemon thread; fail (not hang) when it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not finish within {seconds} s (a blocking open or unbounded work)")
    return box.get("value"), box.get("error")


def tree_state(root: Path) -> dict[str, object]:
    """Every entry under ``root``: kind, and a sha256 of regular files (FIFOs are never opened)."""
    state: dict[str, object] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                state[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    state[path] = ("file", hashlib.sha256(handle.read()).hexdigest())
            else:
                state[path] = (stat.S_IFMT(info.st_mode), info.st_size)
    return state


def sharded(root: Path) -> Path:
    """A two-shard safetensors checkpoint with a config and a SHA256SUMS."""
    root.mkdir(parents=True, exist_ok=True)
    a, b = root / "model-00001-of-00002.safetensors", root / "model-00002-of-00002.safetensors"
    save_file({"x": torch.ones(2), "y": torch.ones(3)}, a)
    save_file({"z": torch.ones(4)}, b)
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 36}, "weight_map": {"x": a.name, "y": a.name, "z": b.name}})
    )
    (root / "config.json").write_text('{"model_type": "t"}')
    return root


def single(root: Path, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"w": torch.arange(4.0)}, root / "model.safetensors")
    (root / "config.json").write_text('{"model_type": "t"}')
    return root


def raw_safetensors(path: Path, header: bytes, data: bytes = b"") -> Path:
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def assert_typed(error: BaseException | None, kind: type[BaseException], names: str) -> None:
    assert error is not None, "no error was raised"
    assert isinstance(error, kind), f"{type(error).__name__}: {error}"
    assert names in str(error), str(error)


# --- 1. Non-regular files never block: FIFOs, devices, links to them -----------------------------


def _fifo_case(tmp_path: Path, which: str) -> tuple[Path, str, dict[str, Any]]:
    """A checkpoint with ``which`` replaced by a FIFO; returns (spec, name to find, verify options)."""
    src = tmp_path / "src"
    options: dict[str, Any] = {}
    if which == "model.safetensors":
        single(src)
        target = src / which
    elif which == "pytorch_model.bin":
        src.mkdir()
        target = src / which
    elif which == "link_to_fifo":
        single(src)
        os.mkfifo(tmp_path / "pipe")
        (src / "model.safetensors").unlink()
        (src / "model.safetensors").symlink_to(tmp_path / "pipe")
        return src, "model.safetensors", options
    elif which == "link_to_dev_zero":
        single(src)
        (src / "model.safetensors").unlink()
        (src / "model.safetensors").symlink_to("/dev/zero")
        return src, "model.safetensors", options
    elif which == "listed_in_SHA256SUMS":
        single(src)
        (src / "tokenizer.json").write_text("{}")
        digest = hashlib.sha256(b"{}").hexdigest()
        (src / "SHA256SUMS").write_text(f"{digest}  tokenizer.json\n")
        target = src / "tokenizer.json"
    elif which == "under_write_manifest_dir":
        single(src)
        (src / "extra").mkdir()
        target = src / "extra" / "notes.txt"
        options = {"write_manifest": True}
    else:
        sharded(src)
        target = src / which
    if target.exists():
        target.unlink()
    os.mkfifo(target)
    return src, target.name, options


FIFO_CASES = [
    "model.safetensors",
    "model-00001-of-00002.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "listed_in_SHA256SUMS",
    "under_write_manifest_dir",
    "link_to_fifo",
    "link_to_dev_zero",
]


@pytest.mark.parametrize("which", FIFO_CASES)
def test_non_regular_files_are_refused_by_every_verb_in_bounded_time(tmp_path: Path, which: str) -> None:
    src, name, verify_options = _fifo_case(tmp_path, which)
    before = tree_state(src)
    out = tmp_path / "out"
    out.mkdir()

    # load and resave must refuse (for the SHA256SUMS/manifest cases the FIFO is no weights file:
    # load ignores it; resave copies other files and must refuse it).
    if which not in ("listed_in_SHA256SUMS", "under_write_manifest_dir"):
        _, error = bounded(lambda: load_sharded(src, progress=False))
        assert_typed(error, CkptError, name)
        assert "does not exist" not in str(error)
    _, error = bounded(lambda: resave(src, out / "dst", progress=False))
    assert_typed(error, CkptError, name)
    assert not os.path.lexists(out / "dst") and os.listdir(out) == []

    info, error = bounded(lambda: inspect_checkpoint(src))
    if error is not None:
        assert_typed(error, CkptError, name)
    else:
        problems = [p.message for p in info.problems if p.severity == "error"]
        assert any(name in m for m in problems), problems
        assert not any("does not exist" in m for m in problems if name in m), problems

    report, error = bounded(lambda: verify_checkpoint(src, progress=False, **verify_options))
    if error is not None:
        assert_typed(error, CkptError, name)
    else:
        assert not report.ok
        assert any(name in p.message for p in report.problems if p.severity == "error"), report.problems
        assert report.manifest_written is None
    assert tree_state(src) == before


def test_materialize_refuses_a_fifo_in_bounded_time(tmp_path: Path) -> None:
    src, name, _ = _fifo_case(tmp_path, "model.safetensors")
    before = tree_state(src)
    for archive in (None, "tar"):
        _, error = bounded(
            lambda archive=archive: materialize(src, tmp_path / "copy", archive=archive, progress=False)
        )
        assert_typed(error, UnsafeCheckpointError, name)
        assert not os.path.lexists(tmp_path / "copy")
    assert tree_state(src) == before


def test_cli_verify_write_manifest_on_a_fifo_is_bounded_json(tmp_path: Path) -> None:
    src, name, _ = _fifo_case(tmp_path, "under_write_manifest_dir")
    result = run_cli("verify", str(src), "--write-manifest", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert not report["ok"] and name in json.dumps(report)
    assert not (src / "SHA256SUMS").exists()


# --- 2. Silent emptiness: never an empty or partial weight set nobody asked for ------------------


def test_index_naming_a_shard_in_a_subfolder_loads_every_tensor(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    save_file({"x": torch.ones(2)}, src / "sub" / "s.safetensors")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "sub/s.safetensors"}}))
    state, error = bounded(lambda: load_sharded(src, progress=False))
    assert error is None, error
    assert set(state) == {"x"} and torch.equal(state["x"], torch.ones(2))


def _empty_weight_map(src: Path) -> str:
    sharded(src)
    (src / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    return "model.safetensors.index.json"


def _key_mapped_to_dot(src: Path) -> str:
    sharded(src)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"]["x"] = "."
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    return "model.safetensors.index.json"


def _torch_without_tensors(src: Path) -> str:
    src.mkdir(parents=True)
    torch.save({"epoch": 3, "step": 10}, src / "pytorch_model.bin")
    return "pytorch_model.bin"


def _torch_nested_under_unknown_key(src: Path) -> str:
    src.mkdir(parents=True)
    torch.save({"weights": {"w": torch.ones(2)}, "epoch": 3}, src / "pytorch_model.bin")
    return "pytorch_model.bin"


def _torch_int_keys(src: Path) -> str:
    src.mkdir(parents=True)
    torch.save({0: torch.ones(2), 1: torch.ones(3)}, src / "pytorch_model.bin")
    return "pytorch_model.bin"


EMPTY_CASES = {
    "empty_weight_map": _empty_weight_map,
    "key_mapped_to_dot": _key_mapped_to_dot,
    "torch_without_tensors": _torch_without_tensors,
    "torch_nested_under_unknown_key": _torch_nested_under_unknown_key,
    "torch_int_keys": _torch_int_keys,
}


@pytest.mark.parametrize("case", sorted(EMPTY_CASES))
def test_empty_or_partial_weight_sets_are_errors(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    name = EMPTY_CASES[case](src)
    before = tree_state(src)
    _, error = bounded(lambda: load_sharded(src, progress=False))
    assert_typed(error, CorruptCheckpointError, name)
    (tmp_path / "out").mkdir()
    _, error = bounded(lambda: resave(src, tmp_path / "out" / "dst", progress=False))
    assert_typed(error, CorruptCheckpointError, name)
    assert os.listdir(tmp_path / "out") == []
    if case != "torch_nested_under_unknown_key":  # inspect lists nested tensors by dotted name
        info, error = bounded(lambda: inspect_checkpoint(src))
        assert error is None and not info.ok, info.problems
        assert any(name in p.message for p in info.problems if p.severity == "error"), info.problems
    assert tree_state(src) == before


# --- 3. Confinement that holds ---------------------------------------------------------------


def _pipeline_with_outside_component(tmp_path: Path) -> Path:
    outside = single(tmp_path / "elsewhere")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "AutoencoderKL"]}))
    (pipe / "vae").symlink_to(outside, target_is_directory=True)
    return pipe


def test_component_folder_linking_out_of_the_pipeline_is_refused_under_confine(tmp_path: Path) -> None:
    pipe = _pipeline_with_outside_component(tmp_path)
    before = tree_state(tmp_path / "elsewhere")
    for call in (
        lambda: load_sharded(pipe, subfolder="vae", confine=True, progress=False),
        lambda: resolve_ckpt_dir(pipe, subfolder="vae", confine=True),
        lambda: inspect_checkpoint(pipe, confine=True),
        lambda: resave(pipe, tmp_path / "dst", subfolder="vae", confine=True, progress=False),
        lambda: resave(pipe, tmp_path / "dst", confine=True, progress=False),
    ):
        _, error = bounded(call)
        assert_typed(error, UnsafeCheckpointError, "vae")
        assert not os.path.lexists(tmp_path / "dst")
    assert tree_state(tmp_path / "elsewhere") == before


@pytest.mark.parametrize("key", ["../x", "../../../../usr", "a/b", ".", "/etc"])
def test_model_index_keys_climbing_out_are_refused_not_walked(tmp_path: Path, key: str) -> None:
    pipe = tmp_path / "pipe"
    single(pipe / "vae")
    (pipe / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "X"], key: ["diffusers", "Y"]}))
    started = time.monotonic()
    info, error = bounded(lambda: inspect_checkpoint(pipe))
    assert error is None, error
    assert time.monotonic() - started < 5  # nothing outside was walked
    assert any("model_index.json" in p.message and p.severity == "error" for p in info.problems), (
        info.problems
    )
    assert key not in info.components


@pytest.mark.parametrize("subfolder", ["../x", "/etc", "a/../../b", ".", ""])
def test_subfolder_arguments_climbing_out_are_value_errors(tmp_path: Path, subfolder: str) -> None:
    pipe = tmp_path / "pipe"
    single(pipe / "vae")
    if subfolder == "":  # an empty subfolder means none: the pipeline root, which holds no weights
        with pytest.raises(CkptError):
            load_sharded(pipe, subfolder=subfolder, progress=False)
        return
    for call in (
        lambda: load_sharded(pipe, subfolder=subfolder, progress=False),
        lambda: resave(pipe, tmp_path / "dst", subfolder=subfolder, progress=False),
    ):
        with pytest.raises(ValueError, match="subfolder"):
            call()
    assert not os.path.lexists(tmp_path / "dst")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=0, max_size=12))
def test_any_component_name_stays_inside_the_pipeline(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    """Any text as a model_index.json key and as subfolder=: a typed error or a ValueError, or
    a component inside the pipeline; never a raw exception, never a file outside read."""
    base = tmp_path_factory.mktemp("components")
    pipe = base / "pipe"
    single(pipe / "vae")
    single(base / "outside")
    try:
        text = json.dumps({"vae": ["diffusers", "X"], name: ["diffusers", "Y"]})
    except ValueError:
        return
    (pipe / "model_index.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    info = inspect_checkpoint(pipe)
    assert all(Path(pipe / c).resolve().is_relative_to(pipe) for c in info.components), info.components
    try:
        ckpt = resolve_ckpt_dir(pipe, subfolder=name, confine=True)
    except (CkptError, ValueError):
        return
    assert Path(os.path.realpath(ckpt.path)).is_relative_to(os.path.realpath(pipe))


def _hub_repo(tmp_path: Path, ref: bytes) -> Path:
    repo = tmp_path / "hub" / "models--org--name"
    commit = "a" * 40
    single(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_bytes(ref)
    secret = tmp_path / "secret"
    single(secret)
    return repo


@pytest.mark.parametrize(
    "ref",
    [b"../../../secret", b"../../secret\n", b"\xff\xfe\x00binary", b"/etc/hostname", b"a" * 10_000],
    ids=["climbing", "climbing_newline", "binary", "absolute", "huge"],
)
def test_refs_main_holding_anything_but_a_commit_is_refused(tmp_path: Path, ref: bytes) -> None:
    repo = _hub_repo(tmp_path, ref)
    before = tree_state(tmp_path)
    for call in (
        lambda: materialize(repo, tmp_path / "copy", progress=False),
        lambda: inspect_checkpoint(repo),
        lambda: resolve_ckpt_dir(repo),
    ):
        _, error = bounded(call)
        assert_typed(error, CkptError, "refs")
        assert "secret" not in str(error).replace(str(tmp_path), "")
        assert "\\xff" not in str(error) and "hostname" not in str(error)
    assert not os.path.lexists(tmp_path / "copy")
    assert tree_state(tmp_path) == before


def test_revision_climbing_out_is_refused_without_echoing_files(tmp_path: Path) -> None:
    repo = _hub_repo(tmp_path, b"a" * 40)
    _, error = bounded(lambda: inspect_checkpoint(repo, revision="../../secret"))
    assert_typed(error, UnsafeCheckpointError, "revision")


def test_swapping_a_shard_for_an_outside_link_never_leaks_outside_bytes(tmp_path: Path) -> None:
    """Check-then-open race: a thread swaps the shard for a link out of the checkpoint and back,
    for 10 s, while load_sharded(confine=True) loads in a loop (plain and mmap). Every load
    returns the inside tensor or raises a typed error; never the outside one."""
    src = single(tmp_path / "src", {"w": torch.zeros(256)})
    outside = tmp_path / "outside.safetensors"
    save_file({"w": torch.full((256,), 7.0)}, outside)
    real = src / "model.safetensors"
    inside_copy = tmp_path / "src" / ".inside"
    os.link(real, inside_copy)
    stop = threading.Event()

    def swapper() -> None:
        link = src / ".swap"
        while not stop.is_set():
            with pytestcontext_suppress():
                os.symlink(outside, link)
                os.replace(link, real)
            with pytestcontext_suppress():
                os.link(inside_copy, link)
                os.replace(link, real)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    loads = refused = 0
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            for mmap in (False, True):
                try:
                    state = load_sharded(src, confine=True, mmap=mmap, progress=False)
                except CkptError:
                    refused += 1
                    continue
                loads += 1
                assert torch.count_nonzero(state["w"]) == 0, "outside bytes were returned"
    finally:
        stop.set()
        thread.join(5)
    assert loads > 0 and refused > 0, (loads, refused)  # both sides of the race were hit


class pytestcontext_suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


# --- 4. Writes stay inside the destination -------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("variant", "x/../../../f"),
        ("variant", ""),
        ("variant", "a.b"),
        ("weights_name", "../../escaped"),
        ("weights_name", "/tmp/abs"),
        ("weights_name", ""),
        ("weights_name", ".hidden"),
        ("weights_name", "a\x00b"),
        ("weights_name", "model.fp16"),
    ],
)
def test_hostile_output_names_are_refused_before_anything_is_written(
    tmp_path: Path, option: str, value: str
) -> None:
    src = single(tmp_path / "src")
    before = tree_state(tmp_path)
    dst = tmp_path / "new1" / "new2" / "dst"
    with pytest.raises(ValueError, match=option):
        resave(src, dst, progress=False, **{option: value})
    assert tree_state(tmp_path) == before  # not even the new parents of dst


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    weights_name=st.one_of(st.none(), st.text(min_size=0, max_size=12)),
    variant=st.one_of(st.none(), st.text(min_size=0, max_size=8)),
)
def test_any_output_names_write_only_inside_dst(
    tmp_path_factory: pytest.TempPathFactory, weights_name, variant
) -> None:
    base = tmp_path_factory.mktemp("names")
    src = single(base / "src")
    before = tree_state(base)
    dst = base / "out" / "dst"
    try:
        result = resave(src, dst, weights_name=weights_name, variant=variant, progress=False)
    except (ValueError, CkptError):  # a refused name, or no source weights of that name
        assert tree_state(base) == before
        return
    after = tree_state(base)
    new = set(after) - set(before)
    assert all(Path(p).is_relative_to(base / "out") for p in new), new
    assert {k: v for k, v in after.items() if k in before} == before
    for path in result.weight_files:
        assert path.parent == dst
        with safe_open(path, "pt") as handle:  # never writes what safetensors cannot read
            assert list(handle.keys()) == ["w"]


def test_failed_resave_removes_the_parents_it_created(tmp_path: Path) -> None:
    src = tmp_path / "src"
    raw_safetensors(
        src / "model.safetensors", b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 4
    )
    with pytest.raises(CorruptCheckpointError):
        resave(src, tmp_path / "a" / "b" / "dst", progress=False)
    assert not os.path.lexists(tmp_path / "a")


# --- 5. materialize never replaces what holds its source -----------------------------------------


def test_materialize_refuses_a_destination_that_contains_the_source(tmp_path: Path) -> None:
    parent = tmp_path / "p"
    src = single(parent / "ckpt")
    before = tree_state(parent)
    for dst in (parent, tmp_path, src, src / "inner"):
        with pytest.raises(ValueError, match="source"):
            materialize(src, dst, overwrite=True, progress=False)
    assert tree_state(parent) == before


def test_materialize_refuses_a_destination_holding_the_blobs_a_snapshot_links_to(tmp_path: Path) -> None:
    repo = tmp_path / "models--org--name"
    blob = repo / "blobs" / ("b" * 64)
    single(tmp_path / "tmp")
    blob.parent.mkdir(parents=True)
    os.replace(tmp_path / "tmp" / "model.safetensors", blob)
    snap = repo / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(os.path.relpath(blob, snap))
    before = tree_state(repo)
    with pytest.raises(ValueError, match="source"):
        materialize(snap, repo / "blobs", overwrite=True, progress=False)
    assert tree_state(repo) == before


# --- 6. Crash-recovery leftovers are matched exactly ---------------------------------------------


@pytest.mark.parametrize("name", ["o*", "o?", "[o]", "o[a-z]*"])
def test_recovery_never_touches_another_destination_s_leftovers(tmp_path: Path, name: str) -> None:
    src = single(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    # Another destination ("other") has a staging directory and a copy set aside by a killed run.
    theirs = [
        out / ".other.ckptkit-tmp-abcd1234",
        out / ".other.ckptkit-old-abcd1234",
        out / ".o.ckptkit-tmp-zzzz9999",
    ]
    for path in theirs:
        path.mkdir()
        (path / "keep").write_text("x")
    resave(src, out / name, progress=False)
    for path in theirs:
        assert (path / "keep").read_text() == "x", path
    assert not os.path.lexists(out / "other")


def test_recovery_still_removes_its_own_leftovers(tmp_path: Path) -> None:
    src = single(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / ".o*.ckptkit-tmp-abcd1234"
    mine.mkdir()
    resave(src, out / "o*", progress=False)
    assert not mine.exists()


# --- 7. Weaker spots: typed errors, honest messages, bounded work --------------------------------


def _link_loop(src: Path) -> tuple[str, type[CkptError]]:
    src.mkdir(parents=True)
    (src / "model.safetensors").symlink_to("model.safetensors")
    return "model.safetensors", CkptError


def _deep_json_index(src: Path) -> tuple[str, type[CkptError]]:
    sharded(src)
    (src / "model.safetensors.index.json").write_text("[" * 100_000 + "]" * 100_000)
    return "model.safetensors.index.json", CorruptCheckpointError


def _deep_pickle(src: Path) -> tuple[str, type[CkptError]]:
    src.mkdir(parents=True)
    nested: dict[str, object] = {"w": torch.ones(1)}
    for _ in range(5_000):
        nested = {"n": nested}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # torch.save's pickler recurses too
    try:
        torch.save(nested, src / "pytorch_model.bin")
    finally:
        sys.setrecursionlimit(limit)
    return "pytorch_model.bin", CkptError


def _self_referencing_pickle(src: Path) -> tuple[str, type[CkptError]]:
    src.mkdir(parents=True)
    loop: dict[str, object] = {"w": torch.ones(1)}
    loop["me"] = loop
    torch.save(loop, src / "pytorch_model.bin")
    return "pytorch_model.bin", CkptError


def test_a_self_referencing_state_dict_is_read_like_torch_reads_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _self_referencing_pickle(src)
    assert set(load_sharded(src, progress=False)) == {"w"}
    info = inspect_checkpoint(src)
    assert info.ok and info.tensor_count == 1, info.problems


def _absurd_shape(src: Path) -> tuple[str, type[CkptError]]:
    raw_safetensors(
        src / "model.safetensors", b'{"w":{"dtype":"F32","shape":[0,%d],"data_offsets":[0,0]}}' % 2**70
    )
    return "model.safetensors", CorruptCheckpointError


def _nan_in_entry(src: Path) -> tuple[str, type[CkptError]]:
    raw_safetensors(
        src / "model.safetensors",
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":NaN}}',
        b"\0" * 4,
    )
    return "model.safetensors", CorruptCheckpointError


def _lone_surrogate(src: Path) -> tuple[str, type[CkptError]]:
    raw_safetensors(
        src / "model.safetensors", b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4
    )
    return "model.safetensors", CorruptCheckpointError


def _storage_too_small(src: Path) -> tuple[str, type[CkptError]]:
    src.mkdir(parents=True)
    path = src / "pytorch_model.bin"
    torch.save({"w": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    # The pickle says shape (4,) over a 4-element storage; make it say (64,).
    members[pkl] = members[pkl].replace(b"K\x04\x85", b"K@\x85", 1)
    assert b"K@\x85" in members[pkl]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return "pytorch_model.bin", CorruptCheckpointError


def _sparse_huge_index(src: Path) -> tuple[str, type[CkptError]]:
    sharded(src)
    with open(src / "model.safetensors.index.json", "r+b") as handle:
        handle.truncate(2**31)  # sparse: costs no disk, would cost 2 GB to read
    return "model.safetensors.index.json", CorruptCheckpointError


def _pickle_expanding_past_the_cap(src: Path) -> tuple[str, type[CkptError]]:
    src.mkdir(parents=True)
    with zipfile.ZipFile(src / "pytorch_model.bin", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (MAX_PICKLE_SIZE + 1))
    return "pytorch_model.bin", CorruptCheckpointError


WEAK_CASES = {
    "link_loop": _link_loop,
    "deep_json_index": _deep_json_index,
    "deep_pickle": _deep_pickle,
    "absurd_shape": _absurd_shape,
    "nan_in_entry": _nan_in_entry,
    "lone_surrogate": _lone_surrogate,
    "storage_too_small": _storage_too_small,
    "sparse_2gb_index": _sparse_huge_index,
    "pickle_expanding_past_the_cap": _pickle_expanding_past_the_cap,
}


@pytest.mark.parametrize("case", sorted(WEAK_CASES))
def test_weak_spots_are_typed_errors_in_every_verb(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    name, kind = WEAK_CASES[case](src)
    before = tree_state(src)
    (tmp_path / "out").mkdir()
    for call in (
        lambda: load_sharded(src, progress=False),
        lambda: resave(src, tmp_path / "out" / "dst", progress=False),
    ):
        _, error = bounded(call)
        assert_typed(error, kind, name)
        assert not isinstance(error, RecursionError)
    assert os.listdir(tmp_path / "out") == []
    info, error = bounded(lambda: inspect_checkpoint(src))
    if error is not None:
        assert_typed(error, kind, name)
    else:
        assert any(name in p.message for p in info.problems if p.severity == "error"), info.problems
    report, error = bounded(lambda: verify_checkpoint(src, progress=False))
    if error is not None:
        assert_typed(error, kind, name)
    else:
        assert not report.ok
    assert tree_state(src) == before


@pytest.mark.parametrize(
    "header",
    [
        b'{"w":{"dtype":"F32","shape":[0,%d],"data_offsets":[0,0]}}' % 2**70,
        b'{"w":{"dtype":"F32","shape":[%d,%d,0],"data_offsets":[0,0]}}' % (2**40, 2**40),
        b'{"w":{"dtype":"F32","shape":[0,%d],"data_offsets":[0,0]}}' % (2**64 - 1),
        b'{"w":{"dtype":"F32","shape":[0,%d,%d],"data_offsets":[0,0]}}' % (2**40, 2**40),
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":NaN}}',
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":Infinity}}',
        b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"\\ud83d\\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":"\\udfff"}}',
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":null}',
    ],
)
def test_headers_are_accepted_exactly_when_safetensors_accepts_them(tmp_path: Path, header: bytes) -> None:
    data = b"" if b'"data_offsets":[0,0]' in header else b"\0" * 4
    path = raw_safetensors(tmp_path / "model.safetensors", header, data)
    try:
        with safe_open(path, "pt") as handle:
            expected = sorted(handle.keys())
    except Exception:
        expected = None
    try:
        ours: list[str] | None = sorted(read_header(path).tensors)
    except CorruptCheckpointError as exc:
        assert path.name in str(exc)
        ours = None
    assert ours == expected


def test_a_dimension_torch_cannot_hold_is_a_typed_error_on_load(tmp_path: Path) -> None:
    src = tmp_path / "src"
    raw_safetensors(
        src / "model.safetensors", b'{"w":{"dtype":"F32","shape":[0,%d],"data_offsets":[0,0]}}' % (2**64 - 1)
    )
    for mmap in (False, True):
        with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors"):
            load_sharded(src, mmap=mmap, progress=False)
    out = resave(src, tmp_path / "dst", progress=False)  # bytes are copied: what safetensors reads
    with safe_open(out.weight_files[0], "pt") as handle:
        assert list(handle.keys()) == ["w"]


TORCH_DTYPES = [
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.complex64,
    torch.complex128,
]


def test_torch_files_weights_only_reads_are_not_called_unsafe(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    state = {f"t{i}": torch.zeros(3, dtype=dtype) for i, dtype in enumerate(TORCH_DTYPES)}
    state["sparse"] = torch.eye(3).to_sparse()
    torch.save(state, src / "pytorch_model.bin")
    torch.load(src / "pytorch_model.bin", weights_only=True)  # the reference reads it
    entries = scan_torch_file(src / "pytorch_model.bin")
    assert entries is not None and set(entries) == set(state)
    info = inspect_checkpoint(src)
    assert not [p for p in info.problems if p.severity == "error"], info.problems
    assert info.tensor_count == len(state)


def test_legacy_and_protocol_0_pickles_calling_code_are_problems_in_verify(tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {sentinel}",))

    for protocol in (0, 2):
        src = tmp_path / f"p{protocol}"
        src.mkdir()
        (src / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}, protocol=protocol))
        report = verify_checkpoint(src, progress=False)
        assert not report.ok
        assert any(
            p.severity == "error" and "pytorch_model.bin" in p.message and "system" in p.message
            for p in report.problems
        ), report.problems
        with pytest.raises(UnsafeCheckpointError):
            load_sharded(src, progress=False)
    assert not sentinel.exists()


def test_legacy_format_with_plain_tensors_still_loads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"w": torch.ones(3)}, src / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert scan_torch_file(src / "pytorch_model.bin") is None  # listed only by torch
    assert torch.equal(load_sharded(src, progress=False)["w"], torch.ones(3))


@pytest.mark.parametrize("name", ["SHA256SUMS", "model_index.json"])
def test_small_json_and_manifests_are_capped_before_reading(tmp_path: Path, name: str) -> None:
    src = single(tmp_path / "src")
    with open(src / name, "wb") as handle:
        handle.truncate(2**31)  # sparse 2 GB
    info, error = bounded(lambda: verify_checkpoint(src, progress=False))
    message = str(error) if error is not None else " ".join(p.message for p in info.problems)
    assert name in message and "cap" in message, message


def test_messages_quote_no_foreign_content(tmp_path: Path) -> None:
    src = single(tmp_path / "src")
    (src / "SHA256SUMS").write_text("root:x:0:0:root:/root:/bin/bash\n")
    report = verify_checkpoint(src, progress=False)
    text = " ".join(p.message for p in report.problems)
    assert "SHA256SUMS" in text and "root:x:0:0" not in text
    (src / "SHA256SUMS").write_bytes(b"\xff\xfe" + b"x" * 100)
    report = verify_checkpoint(src, progress=False)
    assert any("SHA256SUMS" in p.message and "UTF-8" in p.message for p in report.problems), report.problems


def test_a_name_too_long_is_a_typed_error(tmp_path: Path) -> None:
    for call in (
        lambda: load_sharded(tmp_path / ("a" * 300)),
        lambda: inspect_checkpoint(tmp_path / ("a" * 300)),
    ):
        _, error = bounded(call)
        assert_typed(error, CkptError, "aaaa")


@pytest.mark.parametrize("code", ["EACCES", "EIO", "ENAMETOOLONG", "ELOOP"])
def test_os_errors_opening_a_file_are_typed_errors_in_every_verb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """The OS refuses to open one shard (permission denied, I/O error, ...): every verb answers
    with a typed error naming it and the OS reason. Injected at ``os.open`` for that one file, as
    these tests run as root (no EACCES) and EIO needs a failing disk."""
    import errno

    src = sharded(tmp_path / "src")
    victim = os.path.realpath(src / "model-00002-of-00002.safetensors")
    real_open = os.open

    def failing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.realpath(path) == victim and not flags & (os.O_WRONLY | os.O_RDWR):
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    before = tree_state(src)
    (tmp_path / "out").mkdir()
    for call in (
        lambda: load_sharded(src, progress=False),
        lambda: resave(src, tmp_path / "out" / "dst", progress=False),
    ):
        _, error = bounded(call)
        assert_typed(error, CkptError, "model-00002-of-00002.safetensors")
    assert os.listdir(tmp_path / "out") == []
    for report in (inspect_checkpoint(src), verify_checkpoint(src, progress=False)):
        assert not report.ok
        assert any("model-00002-of-00002" in p.message for p in report.problems if p.severity == "error")
    assert tree_state(src) == before


def test_lock_directory_that_is_a_file_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    (tmp_path / "t" / f"ckptkit-locks-{os.getuid()}").write_text("not a directory")
    src = single(tmp_path / "src")
    with pytest.raises(DestinationExistsError, match="ckptkit-locks"):
        resave(src, tmp_path / "dst", progress=False)
    assert not os.path.lexists(tmp_path / "dst")


def test_lock_is_private_and_a_timeout_names_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    src = single(tmp_path / "src")
    dst = tmp_path / "dst"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from ckptkit.io.atomic import _lock\n"
        "with _lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(8)\n"
    )
    import subprocess
    import sys

    from tests._subprocess import ENV

    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(dst)],
        stdout=subprocess.PIPE,
        text=True,
        env={**ENV, "TMPDIR": str(tmp_path / "t")},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        directory = tmp_path / "t" / f"ckptkit-locks-{os.getuid()}"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in directory.iterdir())
        monkeypatch.setenv(locks.LOCK_TIMEOUT_ENV, "1")
        with pytest.raises(DestinationExistsError, match=f"pid {holder.pid}"):
            resave(src, dst, progress=False)
        assert not os.path.lexists(dst)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("value", ["2", "y", "enabled", "on", "off", "maybe"])
def test_confine_env_refuses_values_it_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    src = single(tmp_path / "src")
    monkeypatch.setenv("CKPTKIT_CONFINE", value)
    with pytest.raises(ValueError, match="CKPTKIT_CONFINE"):
        load_sharded(src, progress=False)


@pytest.mark.parametrize(
    ("value", "confined"),
    [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("false", False), ("No", False), ("", False)],
)
def test_confine_env_accepts_its_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, confined: bool
) -> None:
    src = single(tmp_path / "src")
    (src / "model.safetensors").rename(tmp_path / "outside.safetensors")
    (src / "model.safetensors").symlink_to(tmp_path / "outside.safetensors")
    monkeypatch.setenv("CKPTKIT_CONFINE", value)
    if confined:
        with pytest.raises(UnsafeCheckpointError):
            load_sharded(src, progress=False)
    else:
        assert set(load_sharded(src, progress=False)) == {"w"}


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["inspect", "/nonexistent/ckpt"], {}),
        (["resave", "SRC", "OUT", "--max-shard-size", "9" * 60 + "GB"], {}),
        (["resave", "SRC", "OUT", "--no-such-option"], {}),
        (["inspect", "SRC"], {"CKPTKIT_CONFINE": "enabled"}),
        (["resave", "SRC", "OUT", "--variant", "x/../../f"], {}),
        (["verify", "SRC/model.safetensors", "--write-manifest"], {}),
    ],
)
def test_cli_json_is_valid_json_on_every_error_path(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    src = single(tmp_path / "src")
    words = [w.replace("SRC", str(src)).replace("OUT", str(tmp_path / "out")) for w in args]
    import subprocess
    import sys

    from tests._subprocess import ENV

    result = subprocess.run(
        [sys.executable, "-m", "ckptkit", *words, "--json"],
        capture_output=True,
        text=True,
        env={**ENV, **env},
        timeout=120,
    )
    assert result.returncode != 0
    parsed = json.loads(result.stdout)
    assert parsed["ok"] is False and parsed["message"], parsed
    assert not os.path.lexists(tmp_path / "out")


def test_a_dangling_link_is_still_reported_as_dangling(tmp_path: Path) -> None:
    src = single(tmp_path / "src")
    (src / "model.safetensors").unlink()
    (src / "model.safetensors").symlink_to(tmp_path / "gone")
    with pytest.raises(IncompleteCheckpointError, match=r"does not exist|dangl"):
        load_sharded(src, progress=False)


def test_hashing_threads_keep_the_callers_confinement(tmp_path: Path) -> None:
    from ckptkit.check.checksums import hash_files
    from ckptkit.format.safe_files import confinement

    src = single(tmp_path / "src")
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (src / "extra.bin").symlink_to(tmp_path / "outside.bin")
    jobs = {src / "extra.bin": {"sha256"}, src / "model.safetensors": {"sha256"}}
    with confinement(src):
        results = hash_files(jobs, progress=False, max_workers=2)
    assert isinstance(results[src / "extra.bin"], UnsafeCheckpointError)
    assert isinstance(results[src / "model.safetensors"], dict)
    assert isinstance(hash_files(jobs, progress=False)[src / "extra.bin"], dict)  # unconfined: read
