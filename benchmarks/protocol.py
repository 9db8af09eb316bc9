"""The measuring protocol every benchmark module shares.

- each trial is a fresh process (``run_alternating``), contenders alternate A B A B, after one
  round run the same way and not counted;
- inside the child, :func:`child_measure` times one call and samples ``RssAnon`` from
  ``/proc/self/status`` every ~2 ms in a thread, relative to a baseline taken after imports
  (file-backed pages of mmaps are not counted: they are reclaimable);
- hot cache: :func:`warm_cache`; cold cache: :func:`drop_cache` (fsync + ``POSIX_FADV_DONTNEED``,
  then checked with ``fincore``);
- results: :func:`summarize` (median, min, max) and :func:`markdown_table`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "child_measure",
    "drop_cache",
    "fincore_resident_bytes",
    "machine_info",
    "markdown_table",
    "run_alternating",
    "summarize",
    "warm_cache",
]

PACKAGES = (
    "ckptkit",
    "torch",
    "safetensors",
    "huggingface_hub",
    "accelerate",
    "transformers",
    "diffusers",
    "runai-model-streamer",
    "fastsafetensors",
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package == "ckptkit":
            import ckptkit

            return ckptkit.__version__ + " (source tree)"
        return "not installed"


def _command(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip("\n")
    except OSError as exc:
        return f"({args[0]} unavailable: {exc})"


def machine_info() -> str:
    """A markdown block: date, ``nproc``, ``free -g``, ``uname -m``, Python and package versions.

    Example:
        >>> print(machine_info())  # doctest: +SKIP
    """
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- nproc: {_command(['nproc'])}; uname -m: {_command(['uname', '-m'])}; "
        f"Python {platform.python_version()}",
        f"- load average (1, 5, 15 min) when written: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
        if Path("/proc/loadavg").exists()
        else "- load average: unknown",
        f"- packages: {versions}",
        "- free -g:",
        "",
        "```",
        _command(["free", "-g"]),
        "```",
    ]
    return "\n".join(lines)


def _files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    out: list[Path] = []
    for path in map(Path, paths):
        out.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return out


def warm_cache(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Read every file once so its pages are in the page cache (the "hot" state)."""
    buffer = bytearray(16 * 2**20)
    view = memoryview(buffer)
    for path in _files(paths):
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass


def fincore_resident_bytes(paths: Iterable[str | os.PathLike[str]]) -> int | None:
    """Bytes of these files in the page cache, by util-linux ``fincore`` (``None`` without it)."""
    files = [str(p) for p in _files(paths)]
    if not files or shutil.which("fincore") is None:
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *files],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line) for line in out.split())


def drop_cache(paths: Iterable[str | os.PathLike[str]]) -> int | None:
    """Evict the files from the page cache without root: fsync, then ``POSIX_FADV_DONTNEED``.

    Run it from a process that has none of the files mapped. Returns the bytes still resident
    afterwards (checked with ``fincore``; ``None`` when fincore is missing); warns when any stayed.
    """
    files = _files(paths)
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    resident = fincore_resident_bytes(files)
    if resident:
        print(f"drop_cache: {resident} bytes stayed resident (a process maps them?)", file=sys.stderr)
    return resident


def _rss_anon() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def child_measure(fn: Callable[[], Any], *, interval: float = 0.002) -> dict[str, Any]:
    """Time ``fn()`` and its peak anonymous RSS above the current (post-import) baseline.

    Call it in the child process after imports and setup. ``RssAnon`` is sampled every
    ``interval`` seconds in a thread, and once more after ``fn`` returns (what it returned is
    still alive then). A transient peak shorter than the sampling interval, inside one C call
    that holds the GIL, can be missed.

    Returns:
        ``{"seconds": float, "peak_anon_bytes": int}``.
    """
    baseline = _rss_anon()
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_anon())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = max(peak, _rss_anon())
    stop.set()
    sampler.join()
    peak = max(peak, _rss_anon())
    del result
    return {"seconds": seconds, "peak_anon_bytes": max(0, peak - baseline)}


def run_alternating(
    contenders: Mapping[str, list[str]],
    trials: int = 5,
    env: Mapping[str, str] | None = None,
    *,
    before_each: Callable[[str], None] | None = None,
    timeout: float = 600,
    warmup: int = 1,
) -> dict[str, list[dict[str, Any]]]:
    """Run each contender's argv ``trials`` times in fresh processes, alternating A B A B, after
    ``warmup`` rounds that are run the same way and not counted.

    Each child prints one JSON line (the last line of its stdout) with at least ``"seconds"``
    and ``"peak_anon_bytes"``. A child that fails (an out-of-memory kill is a result too) gives
    ``{"error": ...}`` for that trial.

    Args:
        contenders: name -> argv.
        trials: rounds.
        env: extra environment for the children.
        before_each: called with the contender's name before each trial (``drop_cache``).
        timeout: seconds before a child is killed.
        warmup: rounds run first and thrown away. On this VM the first processes after another
            workload meet a different machine (memory the host may have to fault in again, the disk's
            cache in another state): in one run the first round took 0.8 s for a load whose other
            six took 0.18-0.38 s, and six of the nine contenders were slowest in that round.
    """
    child_env = {**os.environ, **(env or {})}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for round_ in range(warmup + trials):
        for name, argv in contenders.items():
            if before_each is not None:
                before_each(name)
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=child_env, timeout=timeout)
            except subprocess.TimeoutExpired:
                results[name].append({"error": f"timed out after {timeout} s"})
                continue
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                results[name].append({"error": f"exit {proc.returncode}: {tail[0][:300]}"})
                continue
            results[name].append(json.loads(lines[-1]))
        if round_ < warmup:
            for trials_so_far in results.values():
                trials_so_far.clear()
    return results


def summarize(results: Mapping[str, list[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per contender: median/min/max seconds and peak anon bytes, and errors."""
    rows = []
    for name, trials in results.items():
        ok = [t for t in trials if "error" not in t]
        row: dict[str, Any] = {"contender": name, "trials": len(ok)}
        if ok:
            seconds = [float(t["seconds"]) for t in ok]
            anon = [int(t["peak_anon_bytes"]) for t in ok]
            row.update(
                median_s=statistics.median(seconds),
                min_s=min(seconds),
                max_s=max(seconds),
                median_anon_bytes=int(statistics.median(anon)),
                max_anon_bytes=max(anon),
            )
            extras = {k for t in ok for k in t} - {"seconds", "peak_anon_bytes"}
            for key in sorted(extras):
                values = [t[key] for t in ok if key in t]
                row[key] = (
                    statistics.median(values)
                    if all(isinstance(v, (int, float)) for v in values)
                    else values[0]
                )
        errors = [t["error"] for t in trials if "error" in t]
        if errors:
            row["errors"] = f"{len(errors)}x {errors[0]}"
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[Mapping[str, Any]]) -> str:
    """A markdown table of dict rows; columns are the keys in first-seen order."""
    if not rows:
        return "(no results)"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
