"""URL batches through the real uploader and the real stand-in on loopback, the
stand-in fetching images a local HTTP server makes with Pillow: indexed rows with
image ids and their metadata on the stand-in; a URL it cannot fetch isolated by
splitting and failed `bad_url`; no file moved anywhere."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from reka_ingest.core.states import BatchOutcome, FileState, Origin, Reason
from reka_ingest.files.manifests import normalise_url, url_identity
from reka_ingest.ledger.intake import NewFile, create_batch, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from reka_ingest.standin.runner import RunningStandin
from scheduler.requeue import requeue
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.support.url_images import ImageServer, serve_images
from tests.worker.conftest import KEY
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


@pytest.fixture
def images() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


def _stage(rt: Runtime, urls: list[str], metas: list[dict[str, object]] | None = None) -> int:
    """URL rows as the watcher records an image URL list's lines, in one batch."""
    manifest = rt.settings.ingest.work_dir / "claim-1" / "list.urls"
    new = [
        NewFile(
            path=url,
            source_root=str(rt.settings.ingest.inbox / "list.urls"),
            work_path=f"{manifest}#L{i + 1}",
            origin=Origin.URL,
            size=0,
            mtime=0.0,
            sha256=url_identity(normalise_url(url)),
            seen_at=rt.clock(),
            sidecar=(metas[i] if metas else None) or None,
        )
        for i, url in enumerate(urls)
    ]
    recorded = record_files(rt.ledger, new, now=rt.clock())
    return create_batch(rt.ledger, [r.file_id for r in recorded], now=rt.clock())


def _run(rt: Runtime, batch_id: int) -> list[BatchOutcome]:
    """Run a batch and every batch its splits make, as the task queue would."""
    outcomes: list[BatchOutcome] = []
    pending = [batch_id]
    while pending:
        report = upload_batch(rt, pending.pop(0))
        outcomes.append(report.outcome)
        pending.extend(report.enqueue)
    return outcomes


def _rows(rt: Runtime) -> list[File]:
    return sorted(list_files(rt.ledger), key=lambda f: f.id)


def _detail(standin: RunningStandin, image_id: str) -> dict[str, object]:
    response = httpx.get(
        f"{standin.base_url.rstrip('/').removesuffix('/v1')}/_standin/images/{image_id}",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    response.raise_for_status()
    detail: dict[str, object] = response.json()
    return detail


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_url_batch_is_indexed_with_its_metadata(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    images: ImageServer,
    clock: Clock,
) -> None:
    rt = make_rt()
    served = [images.put_image(f"cam/{i}.jpg", seed=i) for i in range(3)]
    metas: list[dict[str, object]] = [
        {"camera_id": "cam-0", "recorded_timestamp_utc": 1700000000},
        {"site_id": "lot-7"},
        {},
    ]
    batch_id = _stage(rt, [url for url, _ in served], metas)
    assert _run(rt, batch_id) == [BatchOutcome.DONE]
    rows = _rows(rt)
    assert [f.state for f in rows] == [FileState.INDEXING] * 3
    assert all(f.image_id for f in rows)
    clock.advance(600)
    poll_due(rt)
    rows = _rows(rt)
    assert [f.state for f in rows] == [FileState.INDEXED] * 3
    for row, (url, data), meta in zip(rows, served, metas, strict=True):
        assert row.image_id is not None
        detail = _detail(standin, row.image_id)
        assert detail["source_url"] == url
        assert detail["sha256"] == hashlib.sha256(data).hexdigest()
        assert detail["metadata"] == meta
        assert row.sha256 == url_identity(normalise_url(url))  # the URL's identity, kept
        assert row.final_path is None  # nothing moved: no bytes here
    assert images.hits["/cam/0.jpg"] == 1
    ingest = rt.settings.ingest
    assert _files_under(ingest.done_path) == []
    assert _files_under(ingest.failed_path) == []


def test_a_url_the_api_cannot_fetch_is_isolated_and_fails_bad_url(
    make_rt: Callable[..., Runtime], images: ImageServer, clock: Clock
) -> None:
    rt = make_rt()
    good = [images.put_image(f"ok/{i}.jpg", seed=10 + i)[0] for i in range(3)]
    missing = images.url("gone/404.jpg")  # the image server answers 404
    urls = [good[0], good[1], missing, good[2]]
    batch_id = _stage(rt, urls)
    outcomes = _run(rt, batch_id)
    assert outcomes[0] == BatchOutcome.SPLIT
    assert BatchOutcome.FAILED in outcomes
    rows = {f.path: f for f in _rows(rt)}
    bad = rows[missing]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.BAD_URL)
    assert "image_urls[" in (bad.message or "")
    assert all(rows[u].state == FileState.INDEXING for u in good)
    clock.advance(600)
    poll_due(rt)
    after = {f.path: f for f in _rows(rt)}
    assert all(after[u].state == FileState.INDEXED for u in good)
    ingest = rt.settings.ingest
    assert _files_under(ingest.failed_path) == []  # a URL row's reason is in the ledger only
    assert _files_under(ingest.done_path) == []


def test_a_mixed_batch_is_split_by_kind(
    make_rt: Callable[..., Runtime], images: ImageServer
) -> None:
    rt = make_rt()
    url, _ = images.put_image("m/1.jpg", seed=3)
    image = rt.settings.ingest.work_dir / "claim-2" / "a.jpg"
    image.parent.mkdir(parents=True)
    data = image_bytes(4)
    image.write_bytes(data)
    file_row = NewFile(
        path="a.jpg",
        source_root=str(rt.settings.ingest.inbox),
        work_path=str(image),
        origin=Origin.EVENT,
        size=len(data),
        mtime=0.0,
        sha256=hashlib.sha256(data).hexdigest(),
        seen_at=rt.clock(),
    )
    url_id = _stage(rt, [url])
    recorded = record_files(rt.ledger, [file_row], now=rt.clock())
    with rt.ledger.write() as s:  # one batch holding both kinds (as an old `retry` made)
        s.get_one(File, recorded[0].file_id).batch_id = url_id
    outcomes = _run(rt, url_id)
    assert outcomes == [BatchOutcome.SPLIT, BatchOutcome.DONE, BatchOutcome.DONE]
    assert [f.state for f in _rows(rt)] == [FileState.INDEXING, FileState.INDEXING]


def test_retry_sends_a_failed_url_again_by_its_url(
    make_rt: Callable[..., Runtime], images: ImageServer, clock: Clock
) -> None:
    rt = make_rt()
    late = images.url("late/1.jpg")  # not served yet: the API cannot fetch it
    _run(rt, _stage(rt, [late]))
    assert _rows(rt)[0].reason == Reason.BAD_URL
    images.put_image("late/1.jpg", seed=7)
    batches, count, skipped = requeue(
        rt.settings.ingest, rt.ledger, reason="bad_url", path_glob=None
    )
    assert (count, skipped) == (1, {})
    assert [o for b in batches for o in _run(rt, b)] == [BatchOutcome.DONE]
    row = _rows(rt)[0]
    assert (row.state, row.work_path.endswith("list.urls#L1")) == (FileState.INDEXING, True)
    assert row.image_id
