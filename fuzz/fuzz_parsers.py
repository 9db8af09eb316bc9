"""atheris fuzz target for the torch-free parsers: safetensors headers and index files.

Only :class:`ckptkit.CkptError` may escape either parser; anything else is a finding.

    python fuzz/fuzz_parsers.py -max_total_time=60      # or: nox -s fuzz
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from ckptkit.errors import CkptError
    from ckptkit.format.index import read_index
    from ckptkit.format.safetensors_header import parse_header_bytes

_INDEX = os.path.join(tempfile.mkdtemp(prefix="ckptkit-fuzz-"), "model.safetensors.index.json")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    file_size = fdp.ConsumeIntInRange(0, 2**40)
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    try:
        parse_header_bytes(raw, path="fuzz.safetensors", file_size=8 + len(raw) + file_size)
    except CkptError:
        pass
    with open(_INDEX, "wb") as handle:
        handle.write(fdp.ConsumeBytes(fdp.remaining_bytes()))
    try:
        read_index(_INDEX)
    except CkptError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
