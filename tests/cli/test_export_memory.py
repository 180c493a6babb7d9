"""An export's process keeps what it frees for its next chunk
(reka_ingest.cli.export.keep_freed_memory): counted in page faults, which do not
depend on the machine's load, in two fresh interpreters side by side."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Chunks of megabytes made and freed again and again, in blocks over the 128 KB
# glibc maps on their own by default, of sizes that vary as a chunk's texts do.
_CHURN = """
import resource, sys
from reka_ingest.cli.export import keep_freed_memory
if sys.argv[1] == "kept":
    keep_freed_memory()
def chunk():
    held = [bytes(200_000 + i * 1000) for i in range(64)]
    del held
chunk()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    chunk()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_chunks_are_kept_not_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("kept")
    # 20 chunks of ~16 MB: about 4,000 pages each when given back and taken again.
    assert default > 20_000, default
    assert kept * 10 < default, (kept, default)
