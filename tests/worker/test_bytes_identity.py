"""The hash recorded is the hash of the bytes sent (DESIGN #10).

A writer that holds its handle open across the claim can rewrite the file after
the watcher hashed it: the upload then carries other bytes than the ledger's
sha256 says. The upload records the sent bytes' sha256 and size, and the rows
recorded as copies of the file by its old hash (copies of something never
uploaded) are given back: one is queued and uploaded as what it is, the others
follow it. Real files, a real SQLite ledger, the stand-in on loopback, which
keeps the bytes it was sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.files.outbox import file_done
from reka_ingest.ledger.intake import NewFile, Recorded, create_batch, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.uploads import Rehashed, Uploaded, record_uploaded, set_final_path
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import rows_by_path
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(rt: Runtime, rel: str, path: Path, data: bytes, **extra: object) -> Recorded:
    """Record a claimed file as the watcher does, with the hash of `data` (its bytes now)."""
    new = NewFile(
        path=rel,
        source_root=str(rt.settings.ingest.inbox),
        work_path=str(path),
        origin=Origin.EVENT,
        size=len(data),
        mtime=0.0,
        sha256=sha(data),
        seen_at=rt.clock(),
    )
    allow = bool(extra.get("allow_reupload", False))
    [rec] = record_files(rt.ledger, [new], now=rt.clock(), allow_reupload=allow)
    return rec


def drop_copy(rt: Runtime, rel: str, data: bytes) -> Recorded:
    """A file claimed and recorded; a copy of earlier bytes goes where the watcher puts
    it (done/, or nowhere with after_upload=delete), its final path recorded."""
    ingest = rt.settings.ingest
    path = ingest.work_dir / f"copy-{Path(rel).stem}" / Path(rel).name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    rec = record(rt, rel, path, data)
    if rec.state == FileState.DUPLICATE:
        final = file_done(ingest, work_path=str(path), rel_path=rel, file_id=rec.file_id)
        if final is not None:
            set_final_path(rt.ledger, [(rec.file_id, final)], now=rt.clock())
    return rec


def claim_with_open_writer(rt: Runtime, rel: str, data: bytes) -> tuple[Recorded, Path, int]:
    """Drop `rel` into the inbox with a writer that keeps its handle open, claim it by
    rename into the work area and record it, hashed as it is now; returns the row,
    the claimed path and the writer's still-open descriptor."""
    ingest = rt.settings.ingest
    dropped = ingest.inbox / rel
    dropped.parent.mkdir(parents=True, exist_ok=True)
    dropped.write_bytes(data)
    writer = os.open(dropped, os.O_WRONLY)
    claimed = ingest.work_dir / f"claim-{Path(rel).stem}" / Path(rel).name
    claimed.parent.mkdir(parents=True)
    os.rename(dropped, claimed)  # the claim: the writer's handle follows the inode
    return record(rt, rel, claimed, data), claimed, writer


def rewrite(fd: int, data: bytes) -> None:
    """The writer, after the claim, replaces what it wrote, through its own handle."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.close(fd)


def stored_sha(standin: RunningStandin, image_id: str | None) -> str:
    data = standin.state.store.data(image_id or "")
    assert data is not None, image_id
    return sha(data)


def test_a_file_rewritten_after_its_claim_records_the_bytes_sent_and_its_false_copy_is_uploaded(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt()
    first, second, other = image_bytes(90), image_bytes(91), image_bytes(92)
    a, claimed, writer = claim_with_open_writer(rt, "cam/a.jpg", first)
    u_path = rt.settings.ingest.work_dir / "claim-u" / "u.jpg"
    u_path.parent.mkdir(parents=True)
    u_path.write_bytes(other)
    u = record(rt, "cam/u.jpg", u_path, other)
    batch = create_batch(rt.ledger, [a.file_id, u.file_id], now=clock())
    # The first bytes dropped again: recorded as a copy of a.jpg, moved to done/.
    b = drop_copy(rt, "cam/b.jpg", first)
    assert (b.state, b.duplicate_of) == (FileState.DUPLICATE, a.file_id)
    rewrite(writer, second)
    assert claimed.read_bytes() == second

    report = upload_batch(rt, batch)
    assert (report.outcome, report.uploaded) == ("done", 2)
    rows = rows_by_path(rt)
    row_a, row_u, row_b = rows["cam/a.jpg"], rows["cam/u.jpg"], rows["cam/b.jpg"]
    # The ledger says what was sent, and what the server holds.
    assert row_a.sha256 == stored_sha(standin, row_a.image_id) == sha(second)
    assert len(report.enqueue) == 1  # one new batch, for the copy
    assert row_a.size == len(second)
    assert "changed after it was claimed" in (row_a.message or "")
    assert sha(first)[:12] in (row_a.message or "") and sha(second)[:12] in (row_a.message or "")
    # A file sent as it was claimed is left as it was.
    assert (row_u.sha256, row_u.message) == (sha(other), None)
    assert row_u.sha256 == stored_sha(standin, row_u.image_id)
    # The copy was a copy of bytes never sent: queued again, from where its bytes are.
    assert row_b.state == FileState.QUEUED
    assert (row_b.duplicate_of, row_b.image_id, row_b.reason) == (None, None, None)
    assert row_b.batch_id == report.enqueue[0]
    assert "queued again" in (row_b.message or "")
    assert Path(row_b.work_path).read_bytes() == first

    again = upload_batch(rt, report.enqueue[0])
    assert (again.outcome, again.uploaded, again.enqueue) == ("done", 1, [])
    row_b = rows_by_path(rt)["cam/b.jpg"]
    assert row_b.state == FileState.INDEXING and row_b.image_id != row_a.image_id
    assert row_b.sha256 == sha(first) == stored_sha(standin, row_b.image_id)
    clock.advance(100)
    assert poll_due(rt).indexed == 3
    assert {r.state for r in list_files(rt.ledger)} == {FileState.INDEXED}

    # From now on each set of bytes has its own original.
    assert drop_copy(rt, "cam/c.jpg", first).duplicate_of == row_b.id
    assert drop_copy(rt, "cam/d.jpg", second).duplicate_of == row_a.id


def test_several_false_copies_upload_once_and_the_others_follow_the_first(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt()
    first, second = image_bytes(93), image_bytes(94)
    a, _, writer = claim_with_open_writer(rt, "a.jpg", first)
    batch = create_batch(rt.ledger, [a.file_id], now=clock())
    copies = [drop_copy(rt, f"copy{i}.jpg", first) for i in range(3)]
    assert {c.duplicate_of for c in copies} == {a.file_id}
    rewrite(writer, second)

    report = upload_batch(rt, batch)
    assert len(report.enqueue) == 1
    rows = rows_by_path(rt)
    lead, *rest = (rows[f"copy{i}.jpg"] for i in range(3))
    assert lead.state == FileState.QUEUED and lead.batch_id == report.enqueue[0]
    for r in rest:
        assert (r.state, r.duplicate_of, r.image_id) == (FileState.DUPLICATE, lead.id, None)
    assert upload_batch(rt, report.enqueue[0]).uploaded == 1
    rows = rows_by_path(rt)
    lead = rows["copy0.jpg"]
    assert stored_sha(standin, lead.image_id) == sha(first)
    assert {rows[f"copy{i}.jpg"].image_id for i in (1, 2)} == {lead.image_id}
    assert len(standin.state.store) == 2  # the second bytes and the first, once each


def test_a_false_copy_whose_bytes_were_deleted_fails_as_missing(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    rt = make_rt(after_upload="delete")
    a, _, writer = claim_with_open_writer(rt, "a.jpg", image_bytes(95))
    batch = create_batch(rt.ledger, [a.file_id], now=clock())
    drop_copy(rt, "gone.jpg", image_bytes(95))  # its bytes deleted at intake
    rewrite(writer, image_bytes(96))
    report = upload_batch(rt, batch)
    assert upload_batch(rt, report.enqueue[0]).failed == 1
    row = rows_by_path(rt)["gone.jpg"]
    assert (row.state, row.reason) == (FileState.FAILED, Reason.FILE_MISSING)


def test_false_copies_point_at_another_live_row_with_their_bytes_when_there_is_one(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    rt = make_rt()
    old, new = "1" * 64, "2" * 64
    work = rt.settings.ingest.work_dir

    def rec(name: str, allow: bool = False) -> Recorded:
        new_file = NewFile(
            path=name,
            source_root="/in",
            work_path=str(work / name),
            origin=Origin.EVENT,
            size=10,
            mtime=0.0,
            sha256=old,
            seen_at=clock(),
        )
        [r] = record_files(rt.ledger, [new_file], now=clock(), allow_reupload=allow)
        return r

    x, y = rec("x.jpg"), rec("y.jpg")
    w = rec("w.jpg", allow=True)  # recorded while re-uploads were allowed: live, same bytes
    assert (y.duplicate_of, w.state) == (x.file_id, FileState.QUEUED)
    result = Uploaded(
        file_id=x.file_id,
        image_id="img-x",
        image_url="https://x/img-x",
        indexing_status=1,
        upload_timestamp=clock(),
        state=FileState.INDEXING,
    )
    requeued = record_uploaded(
        rt.ledger,
        [result],
        request_id="req",
        now=clock(),
        rehashed=[Rehashed(x.file_id, old, new, 11)],
    )
    assert requeued == []
    rows = rows_by_path(rt)
    assert (rows["x.jpg"].sha256, rows["x.jpg"].size) == (new, 11)
    assert (rows["y.jpg"].state, rows["y.jpg"].duplicate_of) == (FileState.DUPLICATE, w.file_id)
    assert rows["y.jpg"].image_id is None  # w has not been uploaded yet
