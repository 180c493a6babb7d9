"""A file that cannot be read (permissions) fails with `unreadable`, at intake
(the watcher's hash) and at the worker's check.

The suite runs as root, and root reads a mode-0 file anyway, so chmod alone
shows nothing. Here the reading step runs in a child process that drops to
the `nobody` uid (65534) after importing what it needs: the same functions the
watcher and the worker call, meeting a real EACCES from the kernel. Not shown
in the real-process scenario: there every process runs as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import write_image

NOBODY = 65534

CHILD = """
import json, os, sys
from pathlib import Path
from PIL import Image
from scheduler.describe import describe
from reka_ingest.core.errors import FileRejected
from reka_ingest.files.validate import check_image

Image.init()  # load Pillow's format plugins before the uid drop
path = sys.argv[1]
if os.geteuid() == 0:
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[2]))
out = {"uid": os.geteuid()}
try:
    check_image(Path(path), max_bytes=10_000_000)
    out["worker"] = None
except FileRejected as err:
    out["worker"] = [str(err.reason), err.message]
new = describe(
    path, rel_path="locked.jpg", source_root=os.path.dirname(path), origin="scan",
    seen_at=0.0, sidecar_path=None, defaults=None, max_image_bytes=10_000_000,
)
out["intake"] = [str(new.reason), new.message]
print(json.dumps(out))
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may enter (pytest's tmp folders are root-only, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="reka-unreadable-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for p in folder.iterdir():
            p.chmod(0o644)
            p.unlink()
        folder.rmdir()


@pytest.mark.timeout(60)
def test_an_unreadable_file_fails_with_unreadable_at_intake_and_at_the_worker(
    open_folder: Path,
) -> None:
    locked = write_image(open_folder / "locked.jpg", seed=6)
    locked.chmod(0)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(locked), str(NOBODY)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["uid"] != 0  # the read really ran without root's override
    assert out["worker"] == ["unreadable", "cannot read the file: Permission denied"]
    assert out["intake"] == ["unreadable", "cannot open the file: Permission denied"]
