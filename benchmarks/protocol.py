"""The measuring protocol of BENCH.md: fresh process per trial, contenders alternated, RssAnon sampled.

A contender is an argv; its process runs the work inside :func:`child_measure` and prints one JSON
line with ``seconds`` and ``peak_anon_bytes`` (peak ``RssAnon`` above the post-import baseline).
(Minimal version written for the resave benchmark; the shared one keeps these names.)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from importlib import metadata

__all__ = [
    "child_measure",
    "drop_cache",
    "machine_info",
    "markdown_table",
    "run_alternating",
    "summarize",
    "warm_cache",
]

PACKAGES = ("torch", "safetensors", "huggingface_hub", "transformers", "diffusers", "accelerate")


def machine_info() -> str:
    """nproc, memory, architecture, kernel and package versions, as one markdown paragraph."""
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return (
        f"nproc {os.cpu_count()}, {total} GiB RAM (`free -g`), {platform.machine()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}; " + ", ".join(versions)
    )


def _files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    out: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            out.extend(os.path.join(d, f) for d, _, fs in os.walk(path) for f in sorted(fs))
        else:
            out.append(path)
    return out


def warm_cache(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Read every file (``cat > /dev/null``) so it sits in the page cache."""
    for path in _files(paths):
        with open(path, "rb", buffering=0) as handle:
            while handle.read(16 * 2**20):
                pass


def drop_cache(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Evict files from the page cache without root: fsync, then ``POSIX_FADV_DONTNEED``."""
    for path in _files(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_alternating(
    contenders: dict[str, list[str]], trials: int = 5, env: dict[str, str] | None = None
) -> dict[str, list[dict]]:
    """Run each contender's argv ``trials`` times in fresh processes, alternating A B C A B C ...

    Returns:
        contender -> one dict per trial (the child's JSON line; ``{"error": ...}`` when it failed).
    """
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for trial in range(trials):
        for name, argv in contenders.items():
            os.sync()  # start every trial without another trial's dirty pages being written back
            proc = subprocess.run(argv, capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                result = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
            else:
                result = json.loads(lines[-1])
            results[name].append(result)
            print(f"  trial {trial + 1}/{trials} {name}: {result}", flush=True)
    return results


def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def child_measure(fn: Callable[[], object]) -> dict:
    """Inside the child: time ``fn()`` while a thread samples RssAnon every 2 ms.

    Returns:
        ``{"seconds", "peak_anon_bytes"}`` (peak above the baseline taken just before ``fn``).
    """
    base = _rss_anon()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_anon())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    peak = max(peak, _rss_anon())
    return {"seconds": seconds, "peak_anon_bytes": max(0, peak - base)}


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    """Median, min and max seconds and median peak anon per contender (failed trials counted)."""
    rows = []
    for name, trials in results.items():
        ok = [t for t in trials if "seconds" in t]
        row: dict = {"contender": name, "trials": len(ok), "failed": len(trials) - len(ok)}
        if ok:
            seconds = [t["seconds"] for t in ok]
            row.update(
                median_s=statistics.median(seconds),
                min_s=min(seconds),
                max_s=max(seconds),
                peak_anon_mib=statistics.median(t["peak_anon_bytes"] for t in ok) / 2**20,
            )
            extra = {k: v for k, v in ok[0].items() if k not in ("seconds", "peak_anon_bytes")}
            row.update(extra)
        else:
            row["error"] = trials[0].get("error", "") if trials else ""
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A markdown table of :func:`summarize` rows (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def cell(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
