"""A folder in the inbox that cannot be listed is on record (a failed row with
reason `unreadable`), not only a log line at each scan; the rest of the inbox
comes in as usual.

The suite runs as root, and root lists a mode-0 folder anyway: the watcher
runs here in a child process that drops to the `nobody` uid (65534) after its
imports, meeting a real EACCES from the kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import write_image
from worker.ledger import open_ledger
from worker.ledger.queries import list_files
from worker.states import FileState, Reason

NOBODY = 65534

CHILD = """
import os, sys, time
from PIL import Image
from scheduler.watcher import Watcher
from worker.ledger import open_ledger
from worker.settings import load_settings

Image.init()
root = sys.argv[1]
settings = load_settings(
    data_dir=os.path.join(root, "var"), inbox=os.path.join(root, "inbox"),
    stable_interval=0.2, min_file_age=0.2, sidecar_wait=0.2, batch_max_wait=0.2,
).ingest
ledger = open_ledger(f"sqlite:///{os.path.join(root, 'var', 'ledger.db')}")
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))
watcher = Watcher(settings, ledger, lambda batch_id: None)
watcher.start()
deadline = time.monotonic() + 20
while time.monotonic() < deadline and watcher.recorder.totals.recorded < 2:
    time.sleep(0.1)
watcher.stop()
print(watcher.stats.unreadable_folders)
"""


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A tree anyone may write (pytest's tmp folders are root-only, 0700)."""
    root = Path(tempfile.mkdtemp(prefix="reka-unreadable-folder-"))
    try:
        yield root
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(root)], check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the watcher as another uid")
def test_an_unreadable_folder_gets_a_failed_row_and_the_rest_comes_in(open_root: Path) -> None:
    inbox, var = open_root / "inbox", open_root / "var"
    (inbox / "locked").mkdir(parents=True)
    write_image(inbox / "locked" / "hidden.jpg", seed=1)
    write_image(inbox / "open.jpg", seed=2)
    var.mkdir()
    open_ledger(f"sqlite:///{var / 'ledger.db'}").dispose()  # made (and migrated) as root
    for path in [open_root, inbox, var, *var.iterdir(), inbox / "open.jpg"]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    (inbox / "locked").chmod(0)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(open_root), str(NOBODY)],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1"
    ledger = open_ledger(f"sqlite:///{var / 'ledger.db'}")
    try:
        rows = {row.path: row for row in list_files(ledger)}
    finally:
        ledger.dispose()
    locked = rows["locked/"]
    assert (locked.state, locked.reason) == (FileState.FAILED, Reason.UNREADABLE)
    assert "Permission denied" in (locked.message or "")
    assert rows["open.jpg"].state == FileState.QUEUED
