"""CUDA checks: what only a GPU can show (staging into device memory, placement on a real device).

Collected only where ``torch.cuda.is_available()``; elsewhere the folder is not collected at all, so
no skipped test stands in for coverage (run them on a GPU machine with
``python -m pytest tests/gpu -q``; docs/benchmarks.md names the last machine they ran on).
"""

from __future__ import annotations

import torch

collect_ignore = [] if torch.cuda.is_available() else ["test_cuda.py"]
