"""Conformance tests: each upstream loader and its ckptkit shim on the same tiny checkpoint.

Layout: ``opensora/`` encodes Open-Sora's loader behaviour (no upstream package; it runs in the main
suite too); ``ltx/`` and ``wan/`` import the real ``ltx_video`` and ``wan`` packages, which the main
environment does not have: ``nox -s conformance`` installs them and sets ``CKPTKIT_CONFORMANCE=1``,
and only then are those two folders collected. Under that variable a missing upstream package is an
error, never a skip.
"""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("CKPTKIT_CONFORMANCE") else ["ltx", "wan"]
