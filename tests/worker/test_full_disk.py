"""A full disk under the data folder while the ledger lives elsewhere (PostgreSQL):
a file that fails keeps its bytes and its reason.

Renames still work on a full disk, writes do not: the failed file's bytes reach
failed/, its reason file cannot be written. The row then records where the
bytes went (not nothing, as if they had stayed in work/), no half-written
`.error.json.tmp` is left, and the poll sweep's settling writes the reason file
beside the bytes, untouched, once the disk has room.

The upload runs in a real process of its own whose file size limit is nought
(RLIMIT_FSIZE, SIGXFSZ ignored): every write of a byte to a file fails there
(EFBIG), as on a full disk, while the test's own process writes freely.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reka_ingest.core.states import FileState, Reason
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, rows_by_path, stage
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch

_UPLOAD = """
import sys
from worker.runtime import Runtime
from worker.uploader import upload_batch
from worker.uploader import upload_batch
rt = Runtime.start()
print(upload_batch(rt, int(sys.argv[1])).outcome)
rt.close()
"""


def _disk_full() -> None:
    """In the child, before it runs: no write of a byte to any file succeeds."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _on_a_full_disk(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `script` with `args` in a child on a full disk; the last line it printed."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_disk_full,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _upload_on_a_full_disk(rt: Runtime, batch_id: int) -> str:
    ingest = rt.settings.ingest
    env = os.environ | {
        "INGEST_DATA_DIR": str(ingest.data_dir),
        "INGEST_DATABASE_URL": ingest.ledger_url,
        "INGEST_INBOX": str(ingest.inbox),
        "INGEST_REDIS_URL": ingest.broker_url,
        "REKA_API_BASE_URL": rt.settings.reka.api_base_url,
        "REKA_API_KEY": KEY,
        "INGEST_LOG_FORMAT": "console",
    }
    return _on_a_full_disk(_UPLOAD, str(batch_id), env=env)


def test_a_file_failed_on_a_full_disk_keeps_its_bytes_and_gets_its_reason_file_later(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt()
    if rt.ledger.engine.dialect.name != "postgresql":
        pytest.skip("a SQLite ledger on the full disk records nothing: files wait in work/")
    blobs = {"good.jpg": image_bytes(5), "bad/notes.jpg": b"not an image at all"}
    batch = stage(rt, blobs)

    # The good file's request needs a temporary file: it waits, deferred, for room.
    assert _upload_on_a_full_disk(rt, batch) == "deferred"

    failed = rt.settings.ingest.failed_path
    rows = rows_by_path(rt)
    bad = rows["bad/notes.jpg"]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.NOT_AN_IMAGE)
    assert bad.final_path == str(failed / "bad/notes.jpg")  # where its bytes went
    assert (failed / "bad/notes.jpg").read_bytes() == blobs["bad/notes.jpg"]
    assert not any(p.name.endswith((".tmp", ".error.json")) for p in failed.rglob("*"))
    good = rows["good.jpg"]
    assert good.state == FileState.QUEUED
    assert Path(good.work_path).read_bytes() == blobs["good.jpg"]

    # Room again: the batch is sent, then the sweep writes the reason file beside the bytes.
    clock.now = time.time() + 600  # past the deferral, which the child timed by the real clock
    assert upload_batch(rt, batch).outcome == "done"
    assert rows_by_path(rt)["good.jpg"].state in {FileState.INDEXING, FileState.INDEXED}
    poll_due(rt)

    bad = rows_by_path(rt)["bad/notes.jpg"]
    reason_file = failed / "bad/notes.jpg.error.json"
    assert bad.final_path == str(reason_file)
    record = json.loads(reason_file.read_text(encoding="utf-8"))
    assert (record["reason"], record["file_id"]) == (Reason.NOT_AN_IMAGE.value, bad.id)
    assert (failed / "bad/notes.jpg").read_bytes() == blobs["bad/notes.jpg"]  # not moved again
    assert sorted(p.name for p in failed.rglob("*") if p.is_file()) == [
        "notes.jpg",
        "notes.jpg.error.json",
    ]
    assert poll_due(rt).settled == 0  # settled once


def test_a_reason_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The outbox alone, in a child on a full disk: bytes placed, nothing half-written."""
    work = tmp_path / "var" / "work" / "c1"
    work.mkdir(parents=True)
    (work / "a.jpg").write_bytes(b"bytes")
    script = (
        "import sys\n"
        "from reka_ingest.core.settings import IngestSettings\n"
        "from reka_ingest.files.outbox import file_failed\n"
        "s = IngestSettings(data_dir=sys.argv[1])\n"
        "print(file_failed(s, work_path=sys.argv[2], rel_path='a.jpg', file_id=7,"
        " reason='not_an_image', message='m'))\n"
    )
    printed = _on_a_full_disk(script, str(tmp_path / "var"), str(work / "a.jpg"))
    failed = tmp_path / "var" / "failed"
    assert printed == str(failed / "a.jpg")
    assert sorted(p.name for p in failed.rglob("*")) == ["a.jpg"]
