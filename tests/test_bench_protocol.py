"""The benchmark protocol's bookkeeping: the warm-up round is run but not counted, and a target's
round-by-round reading pairs the trials of the same round."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.bench_load import _by_round, _rounds, _targets
from benchmarks.protocol import run_alternating


def _child(log: Path, name: str) -> list[str]:
    """A child that appends its name to ``log`` and reports how many lines the log had before."""
    code = (
        "import json, os, sys\n"
        "log, name = sys.argv[1:]\n"
        "before = len(open(log).read().split()) if os.path.exists(log) else 0\n"
        "open(log, 'a').write(name + '\\n')\n"
        "print(json.dumps({'seconds': float(before), 'peak_anon_bytes': 0}))\n"
    )
    return [sys.executable, "-c", code, str(log), name]


def test_the_warm_up_round_runs_every_contender_and_is_not_counted(tmp_path: Path) -> None:
    log = tmp_path / "log"
    results = run_alternating({"a": _child(log, "a"), "b": _child(log, "b")}, trials=2, warmup=1)
    assert log.read_text().split() == ["a", "b", "a", "b", "a", "b"]  # 3 rounds ran, alternated
    # Only the last two rounds are kept: their children saw 2 and 4 earlier lines (a), 3 and 5 (b).
    assert [t["seconds"] for t in results["a"]] == [2.0, 4.0]
    assert [t["seconds"] for t in results["b"]] == [3.0, 5.0]


def test_no_warm_up_keeps_every_round(tmp_path: Path) -> None:
    log = tmp_path / "log"
    results = run_alternating({"a": _child(log, "a")}, trials=2, warmup=0)
    assert [t["seconds"] for t in results["a"]] == [0.0, 1.0]


def test_round_by_round_pairs_trials_of_the_same_round_and_skips_failed_ones() -> None:
    rounds = _rounds(
        {
            "fast": [{"seconds": 1.0}, {"seconds": 2.0}, {"error": "exit 1"}, {"seconds": 1.0}],
            "slow": [{"seconds": 2.0}, {"seconds": 2.0}, {"seconds": 9.0}, {"seconds": 4.0}],
        }
    )
    assert rounds == {"fast": [1.0, 2.0, None, 1.0], "slow": [2.0, 2.0, 9.0, 4.0]}
    # slow/fast per round: 2.0, 1.0, (failed), 4.0; met where >= 1.5
    assert _by_round([2.0, 1.0, 4.0], lambda r: r >= 1.5) == "round by round 2.00x, 1.00-4.00x, met in 2 of 3"
    assert _by_round([], lambda r: True) == "no complete round"
    text = _targets(
        {"cold": {"st_load_file+clone": 2.0, "ckptkit(mmap=False)": 1.0}},
        {},
        rounds={"cold": {"st_load_file+clone": [2.0, 1.0, None], "ckptkit(mmap=False)": [1.0, 1.0, 1.0]}},
    )
    assert "target >= 1.5x: met; round by round 1.50x, 1.00-2.00x, met in 1 of 2" in text


def test_a_dict_default_miss_says_whether_the_rounds_disagree_with_the_medians() -> None:
    medians = {
        "zero": {"ckptkit": 0.0050, "st_load_file": 0.0045},
        "tiny": {"ckptkit": 0.1, "st_load_file": 0.4},
    }
    mixed = _targets(
        medians, {}, rounds={"zero": {"ckptkit": [4.0, 6.0, 5.0], "st_load_file": [5.0, 4.0, 4.5]}}
    )
    assert "target <= 1.0x: **missed**" in mixed
    assert "round by round the ratio ran from 0.80x to 1.50x (median 1.11x)" in mixed
    assert "the medians' +0.50 ms is within how much one such call moves" in mixed
    assert "4.0x `load_file` on the 5,000-tensor file" in mixed
    slower = _targets(medians, {}, rounds={"zero": {"ckptkit": [5.0, 6.0], "st_load_file": [4.5, 4.0]}})
    assert "ckptkit was the slower in every round; its extra 0.50 ms is a fixed cost per call" in slower
    assert "within how much" not in slower


def test_the_first_touch_floor_fills_every_byte_it_bounds() -> None:
    # A floor that skipped part of the fill would be faster than any load for the wrong reason.
    from benchmarks.bench_load import FLOOR_PIECE, _first_touch_floor

    total = 16 * 2**20 + 3 * FLOOR_PIECE + 5  # a partial chunk and a partial piece at the end
    out = _first_touch_floor(total)()
    assert out.numel() == total
    assert bool((out == 1).all())
