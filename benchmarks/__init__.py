"""ckptkit benchmarks: ``python -m benchmarks`` (or ``nox -s bench``) rewrites docs/benchmarks.md.

Protocol (docs in /work/shared/BENCH.md and :mod:`benchmarks.protocol`): generated data, a fresh
process per trial, contenders alternated, medians with min/max, peak anonymous RSS.
"""
