"""`reka-ingest check`: the ledger against what the stand-in holds.

Real parts: the stand-in on loopback (sharing the test's clock), a ledger on
SQLite and on PostgreSQL, real Redis, real files, the real command line.
Behind the ledger's back, images are uploaded straight to the stand-in (an
orphan, or a second copy of a batch whose answer was lost) or forgotten by it
(`/_standin/images/{id}/expire`, or its retention)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.core.states import FileState, Reason
from reka_ingest.files.heif import ensure_registered
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from reka_ingest.ledger.serverside import iter_check_rows
from reka_ingest.ledger.uploads import claim_batch, flag_possible_duplicates
from reka_ingest.reka.models import ContentDigest, Image
from reka_ingest.standin.runner import RunningStandin
from tests.budget.test_retry_and_status import use_env
from tests.serverside.conftest import FAST, copies_by_sha, expire, upload_behind
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, rows_by_path, stage
from worker import serverside
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.serverside import LIST_PAGE, Pacer, check_server
from worker.uploader import upload_batch


def indexed(rt: Runtime, clock: Clock, blobs: dict[str, bytes]) -> dict[str, File]:
    """Stage, upload and poll these files until indexed; their rows by path."""
    assert upload_batch(rt, stage(rt, blobs)).uploaded == len(blobs)
    clock.advance(10)
    poll_due(rt)
    rows = rows_by_path(rt)
    assert {rows[p].state for p in blobs} == {FileState.INDEXED}
    return rows


def failed_flagged(rt: Runtime, clock: Clock, batch: int) -> None:
    """The batch's files given up as failed, flagged: their uploads' answers were lost."""
    with rt.ledger.write() as s:
        s.execute(
            update(File)
            .where(File.batch_id == batch)
            .values(
                state=FileState.FAILED,
                reason=Reason.UPLOAD_FAILED,
                message="gave up",
                possible_duplicate=True,
                finished_at=clock(),
            )
        )


def cli(monkeypatch: pytest.MonkeyPatch, rt: Runtime, *args: str) -> tuple[int, str]:
    use_env(monkeypatch, rt, REKA_API_KEY=KEY, INGEST_CHECK_REQUESTS_PER_SECOND=str(FAST))
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_orphans_uploaded_behind_the_ledgers_back_are_found_and_never_deleted(
    rt: Runtime,
    clock: Clock,
    standin: RunningStandin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    indexed(rt, clock, {"a.jpg": image_bytes(1), "b.jpg": image_bytes(2)})
    orphans = upload_behind(rt, [image_bytes(3), image_bytes(4)], tmp_path)

    report = check_server(rt)
    assert (report.images_on_server, report.rows_checked) == (4, 2)
    assert (report.orphans, report.missing, report.drift) == (2, 0, 0)
    assert {e["image_id"] for e in report.examples["orphans"]} == set(orphans)
    assert report.requests >= 1 and report.fixed == dict.fromkeys(report.fixed, 0)

    fixed = check_server(rt, fix=True)  # an orphan that is no file's copy stays
    assert fixed.orphans == 2 and fixed.fixed["extra_copies_deleted"] == 0
    assert len(standin.state.store) == 4

    code, output = cli(monkeypatch, rt, "check", "--json")
    assert code == 0, output
    # The app's logging is configured by main(), not here: the object is the last line.
    body = json.loads(output.strip().splitlines()[-1])
    assert body["orphans"] == 2 and body["images_on_server"] == 4
    code, output = cli(monkeypatch, rt, "check")
    assert code == 0 and "orphans (on Reka, owned by no row): 2" in output, output


def test_images_of_a_batch_still_uploading_are_in_flight_not_orphans(
    rt: Runtime, clock: Clock, standin: RunningStandin, tmp_path: Path
) -> None:
    """The server holds a batch's images before its answer is in the ledger: a check
    meanwhile counts them in flight (the next check judges them), not as orphans;
    an image uploaded behind the ledger's back long before stays an orphan."""
    indexed(rt, clock, {"a.jpg": image_bytes(1)})
    (old,) = upload_behind(rt, [image_bytes(2)], tmp_path)
    clock.advance(3600)  # far outside any window of the old upload
    blobs = {"c.jpg": image_bytes(3), "d.jpg": image_bytes(4)}
    batch = stage(rt, blobs)
    assert claim_batch(rt.ledger, batch, now=clock(), lease=600) is not None
    clock.advance(1)
    sent = upload_behind(rt, list(blobs.values()), tmp_path)  # the request, answer not yet in

    report = check_server(rt)
    assert (report.orphans, report.in_flight) == (1, 2), report
    assert [e["image_id"] for e in report.examples["orphans"]] == [old]
    assert {e["image_id"] for e in report.examples["in_flight"]} == set(sent)

    # Its lease long over, the batch is still uploading in the ledger (until a sweep sends
    # it again): its window stays open, its images in flight.
    clock.advance(3600)
    assert check_server(rt).in_flight == 2


def test_a_flagged_file_is_not_settled_while_an_upload_of_its_bytes_is_in_flight(
    rt: Runtime, clock: Clock, standin: RunningStandin, tmp_path: Path
) -> None:
    """A failed, flagged file's bytes dropped again under another name: the new copy's
    upload reached Reka, its answer not recorded yet. That image is the new row's,
    not an extra copy of the failed one: `--fix` leaves it, and the failed file
    stays flagged until the upload is recorded."""
    batch = stage(rt, {"first.jpg": image_bytes(110)})
    failed_flagged(rt, clock, batch)
    again = stage(rt, {"again.jpg": image_bytes(110)})
    assert claim_batch(rt.ledger, again, now=clock(), lease=600) is not None
    [flying] = upload_behind(rt, [image_bytes(110)], tmp_path)

    report = check_server(rt, fix=True)
    assert report.fixed["extra_copies_deleted"] == 0
    assert standin.state.store.get(flying) is not None
    assert (report.duplicates_settled, report.duplicates_unsettled) == (0, 1)
    [why] = report.examples["unsettled"]
    assert "in flight" in str(why["why"])
    assert (report.orphans, report.in_flight) == (0, 1)
    assert rows_by_path(rt)["first.jpg"].possible_duplicate


def test_missing_images_become_expired_and_retry_sends_them_again(
    rt: Runtime, clock: Clock, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = {f"cam/{n}.jpg": image_bytes(10 + n) for n in range(3)}
    rows = indexed(rt, clock, blobs)
    gone = [rows["cam/0.jpg"], rows["cam/1.jpg"]]
    for row in gone:
        expire(standin, row.image_id or "")

    report = check_server(rt)  # read only
    assert (report.missing, report.orphans, report.images_on_server) == (2, 0, 1)
    assert {e["file_id"] for e in report.examples["missing"]} == {r.id for r in gone}
    assert {r.state for r in list_files(rt.ledger)} == {FileState.INDEXED}

    planned = check_server(rt, dry_run=True)
    assert planned.fixed["expired"] == 2 and serverside.NOTE_DRY_RUN in planned.notes
    assert {r.state for r in list_files(rt.ledger)} == {FileState.INDEXED}

    code, output = cli(monkeypatch, rt, "check", "--fix")
    assert code == 0, output
    assert "mark 2 row(s) expired" in output
    now = rows_by_path(rt)
    for row in gone:
        after = now[row.path]
        assert (after.state, after.reason) == (FileState.EXPIRED, Reason.EXPIRED)
        assert after.image_id == row.image_id and (row.image_id or "?") in (after.message or "")
        assert after.updated_at >= row.updated_at
    assert now["cam/2.jpg"].state == FileState.INDEXED
    assert check_server(rt).missing == 0  # expired rows are not asked about again

    code, output = cli(monkeypatch, rt, "retry", "--reason", "expired")
    assert code == 0, output
    assert "requeued 2 file(s) in 1 batch(es)" in output
    queued = [r for r in list_files(rt.ledger) if r.state == FileState.QUEUED]
    assert len(queued) == 2 and queued[0].batch_id is not None
    assert upload_batch(rt, queued[0].batch_id).uploaded == 2
    clock.advance(10)
    poll_due(rt)
    final = rows_by_path(rt)
    assert {r.state for r in final.values()} == {FileState.INDEXED}
    for row in gone:
        assert final[row.path].image_id not in (None, row.image_id)
        assert Path(final[row.path].final_path or "").read_bytes() == blobs[row.path]
    last = check_server(rt)
    assert (last.missing, last.orphans, last.images_on_server) == (0, 0, 3)


def test_images_past_the_retention_are_marked_expired(
    rt: Runtime, clock: Clock, standin: RunningStandin
) -> None:
    standin.state.faults.update({"retention": 30.0})
    indexed(rt, clock, {"old.jpg": image_bytes(20)})
    standin.state.faults.update({"retention": 0.0})
    indexed(rt, clock, {"new.jpg": image_bytes(21)})
    clock.advance(60)
    report = check_server(rt, fix=True)
    assert (report.missing, report.fixed["expired"]) == (1, 1)
    rows = rows_by_path(rt)
    assert rows["old.jpg"].state == FileState.EXPIRED
    assert rows["new.jpg"].state == FileState.INDEXED


def test_a_batch_sent_twice_keeps_one_copy_of_each_file_after_check_fix(
    rt: Runtime, clock: Clock, standin: RunningStandin, tmp_path: Path
) -> None:
    blobs = {f"lost/{n}.jpg": image_bytes(30 + n) for n in range(4)}
    rows = indexed(rt, clock, blobs)
    # The first request's answer was lost: the server kept a copy of each file, and
    # the batch went again (its files flagged).
    upload_behind(rt, list(blobs.values()), tmp_path)
    flag_possible_duplicates(rt.ledger, [r.id for r in rows.values()], now=clock())
    # Flagged too: a file whose lost request never reached the server.
    alone = indexed(rt, clock, {"alone.jpg": image_bytes(40)})["alone.jpg"]
    flag_possible_duplicates(rt.ledger, [alone.id], now=clock())
    # An orphan with other bytes, uploaded in the same window: left alone.
    [stranger] = upload_behind(rt, [image_bytes(41)], tmp_path)
    assert max(copies_by_sha(standin).values()) == 2

    planned = check_server(rt, dry_run=True)
    assert (planned.duplicates_settled, planned.duplicates_unsettled) == (5, 0)
    assert planned.fixed == {"extra_copies_deleted": 4, "expired": 0, "flags_cleared": 5}
    assert len(standin.state.store) == 10 and planned.orphans == 5

    report = check_server(rt, fix=True)
    assert report.fixed == {"extra_copies_deleted": 4, "expired": 0, "flags_cleared": 5}
    assert report.notes == []
    copies = copies_by_sha(standin)
    assert set(copies.values()) == {1}
    assert {hashlib.sha256(b).hexdigest() for b in blobs.values()} <= set(copies)
    assert standin.state.store.get(stranger) is not None
    after = rows_by_path(rt)
    assert not any(r.possible_duplicate for r in after.values())
    assert all(r.state == FileState.INDEXED for r in after.values())
    assert "deleted from Reka" in (after["lost/0.jpg"].message or "")
    assert "one copy on Reka" in (after["alone.jpg"].message or "")
    for path, row in rows.items():  # each file kept its own image
        assert after[path].image_id == row.image_id
        assert standin.state.store.get(row.image_id or "") is not None
    again = check_server(rt, fix=True)
    assert (again.orphans, again.duplicates_settled, again.fixed["extra_copies_deleted"]) == (
        1,
        0,
        0,
    )


def test_a_failed_flagged_file_is_settled_with_no_copy_left_on_reka(
    rt: Runtime, clock: Clock, standin: RunningStandin, tmp_path: Path
) -> None:
    """A failed row has no image as far as the ledger knows: an orphan with its bytes
    (an upload whose answers were all lost) is an extra copy, deleted; the row stays
    failed, with its reason, for `retry` to send again."""
    batch = stage(rt, {"gone.jpg": image_bytes(50), "held.jpg": image_bytes(51)})
    rows = rows_by_path(rt)
    upload_behind(rt, [image_bytes(51)], tmp_path)
    failed_flagged(rt, clock, batch)
    assert len(standin.state.store) == 1
    report = check_server(rt, fix=True)
    assert (report.duplicates_settled, report.duplicates_unsettled) == (2, 0)
    assert report.fixed["extra_copies_deleted"] == 1
    after = rows_by_path(rt)
    for name in ("gone.jpg", "held.jpg"):
        assert not after[name].possible_duplicate
        assert after[name].reason == Reason.UPLOAD_FAILED  # its failure stays as it was
        assert (after[name].message or "").startswith("gave up")
    assert "no copy on Reka" in (after["gone.jpg"].message or "")
    assert "stays failed" in (after["held.jpg"].message or "")
    assert rows["held.jpg"].id == after["held.jpg"].id
    assert len(standin.state.store) == 0  # the copy the ledger cannot own is deleted


def test_an_image_url_that_does_not_serve_the_original_bytes_falls_back_to_the_window(
    rt: Runtime, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = indexed(rt, clock, {"x.jpg": image_bytes(60)})
    upload_behind(rt, [image_bytes(60)], tmp_path)
    flag_possible_duplicates(rt.ledger, [r.id for r in rows.values()], now=clock())
    real = type(rt.client).fetch_digest

    def reencoded(self: Any, url: str, **kw: Any) -> ContentDigest | None:
        digest = real(self, url, **kw)
        assert digest is not None
        return ContentDigest(hashlib.sha256(digest.sha256.encode()).hexdigest(), digest.size)

    monkeypatch.setattr(type(rt.client), "fetch_digest", reencoded)
    report = check_server(rt, fix=True)
    assert serverside.NOTE_NOT_ORIGINAL in report.notes
    assert (report.duplicates_settled, report.duplicates_unsettled) == (0, 1)
    assert report.fixed["extra_copies_deleted"] == 0
    assert rows_by_path(rt)["x.jpg"].possible_duplicate


def test_status_drift_is_reported(rt: Runtime, clock: Clock) -> None:
    rows = indexed(rt, clock, {"d.jpg": image_bytes(70), "e.jpg": image_bytes(71)})
    with rt.ledger.write() as s:
        s.execute(update(File).where(File.id == rows["d.jpg"].id).values(indexing_status=1))
    report = check_server(rt)
    assert report.drift == 1
    [example] = report.examples["drift"]
    assert example["file_id"] == rows["d.jpg"].id
    assert (example["ledger_indexing_status"], example["server_indexing_status"]) == (1, 2)


def test_the_ledger_is_read_in_chunks_of_the_size_given(
    rt: Runtime, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = {f"c/{n}.jpg": image_bytes(80 + n) for n in range(7)}
    rows = indexed(rt, clock, blobs)
    upload_behind(rt, [image_bytes(99)], tmp_path)
    chunks: list[int] = []
    real = iter_check_rows

    def spy(ledger: Any, *, chunk_rows: int) -> Iterator[list[Any]]:
        for chunk in real(ledger, chunk_rows=chunk_rows):
            chunks.append(len(chunk))
            yield chunk

    monkeypatch.setattr(serverside, "iter_check_rows", spy)
    small = check_server(rt, chunk_rows=3)
    assert chunks == [3, 3, 1]
    chunks.clear()
    whole = check_server(rt)
    assert chunks == [len(rows)]
    for name in ("images_on_server", "rows_checked", "orphans", "missing", "drift"):
        assert getattr(small, name) == getattr(whole, name)


class _Pages:
    """A stand-in client for `_list_all`: pages of a fixed list, one shift allowed."""

    def __init__(self, ids: list[str], shift_at: int | None) -> None:
        self.ids = ids
        self.shift_at = shift_at
        self.calls = 0

    def list(self, limit: int, offset: int) -> list[Image]:
        self.calls += 1
        if self.shift_at is not None and self.calls == 2 and self.ids:
            self.ids = self.ids[: self.shift_at] + self.ids[self.shift_at + 1 :]
        return [
            Image(image_id=i, image_url=f"u/{i}", indexing_status=2, upload_timestamp=1.0)
            for i in self.ids[offset : offset + limit]
        ]


class _Rt:
    def __init__(self, client: _Pages) -> None:
        self.client = client


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=0, max_value=3 * LIST_PAGE + 7),
    shift=st.one_of(st.none(), st.integers(min_value=0, max_value=LIST_PAGE - 1)),
)
def test_listing_collects_every_image_in_pages_of_100(n: int, shift: int | None) -> None:
    ids = [f"img-{k:05d}" for k in range(n)]
    pages = _Pages(list(ids), shift)
    pacer = Pacer(1e6, sleep=lambda _s: None)
    listed, odd = serverside._list_all(_Rt(pages), pacer)  # type: ignore[arg-type]
    assert not odd and pacer.requests == pages.calls
    if shift is None or n <= LIST_PAGE:
        assert set(listed) == set(ids)
        assert pages.calls == n // LIST_PAGE + 1
    else:
        # An image deleted while paging shifts the rest: one may be skipped, never
        # one invented (and Get Image confirms a row's image before it is missing).
        assert set(listed) <= set(ids) and len(listed) >= n - 2


def test_pacer_keeps_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(4.0, sleep=sleep, monotonic=lambda: now[0])
    for _ in range(5):
        pacer.wait()
    assert pacer.requests == 5 and now[0] == pytest.approx(1.0)


def test_a_converted_file_is_never_compared_by_content(
    rt: Runtime, clock: Clock, standin: RunningStandin
) -> None:
    """Reka holds the JPEG made from a HEIC, not the bytes its row's sha256 names: the
    check neither takes it as the probe of image URLs (it would conclude they do not
    serve originals) nor counts it as an orphan."""
    ensure_registered()
    rows = indexed(rt, clock, {"a.HEIC": image_bytes(80, fmt="HEIF"), "b.jpg": image_bytes(81)})
    assert rows["a.HEIC"].conversion is not None
    assert rows["a.HEIC"].id < rows["b.jpg"].id  # the first row the check reads
    report = check_server(rt)
    assert serverside.NOTE_NOT_ORIGINAL not in report.notes
    assert (report.orphans, report.missing, report.drift) == (0, 0, 0)
    assert [r.sha256 is None for chunk in iter_check_rows(rt.ledger) for r in chunk] == [
        True,
        False,
    ]
