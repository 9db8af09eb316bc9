"""How long resolve_ckpt_dir takes for a repo that is already in the hub cache, and how many requests.

Serves tiny real repos (tests/_models.py) with tests/hub_server.py, lets huggingface_hub download
them into a fresh cache, then times resolving each again (warm process: huggingface_hub imported).

Run from the repo root: PYTHONPATH=. python benchmarks/resolve_cached.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    import shutil

    from huggingface_hub import constants

    from ckptkit import resolve_ckpt_dir
    from tests._models import save_layouts
    from tests.hub_server import HubServer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        layouts = save_layouts(root / "layouts")
        repos = root / "repos" / "org"
        shutil.copytree(layouts["pipeline"], repos / "pipe")
        shutil.copytree(layouts["t5_variants"], repos / "t5")
        cache = root / "cache"
        cases = [
            ("org/t5 (5 shards)", "org/t5", {}),
            ("org/pipe vae fp16 (2 shards)", "org/pipe", {"subfolder": "vae", "variant": "fp16"}),
            ("org/pipe transformer (1 file)", "org/pipe", {"subfolder": "transformer"}),
        ]
        with HubServer(root / "repos") as hub:
            constants.ENDPOINT = hub.url
            constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
            for _, spec, kwargs in cases:
                resolve_ckpt_dir(spec, cache_dir=cache, **kwargs)
            hub.reset()
            print(f"{'case':<32} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} requests")
            for label, spec, kwargs in cases:
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    resolve_ckpt_dir(spec, cache_dir=cache, **kwargs)
                    times.append((time.perf_counter() - start) * 1000)
                times.sort()
                p95 = times[int(len(times) * 0.95) - 1]
                print(
                    f"{label:<32} {statistics.median(times):>10.2f} {p95:>8.2f} {times[-1]:>8.2f} {len(hub.requests)}"
                )
            # A fresh process also pays for importing huggingface_hub; resolving itself is the figure above.
            command = [sys.executable, "-m", "ckptkit", "resolve", "org/t5", "--cache-dir", str(cache)]
            env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_ENDPOINT": hub.url}
            walls = []
            for _ in range(5):
                start = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True)
                walls.append((time.perf_counter() - start) * 1000)
            print(
                f"cold `ckptkit resolve org/t5`: median {statistics.median(walls):.0f} ms, {len(hub.requests)} requests"
            )


if __name__ == "__main__":
    main()
