"""Queue failed files again: the one code path behind `reka-ingest retry` and the
web page's retry button.

A failed URL row (a line of an image URL list) has no bytes: it is queued again
as it is, by its URL, in batches of URL rows; one that failed at intake (the
line is not a usable URL) is not retried.

For each matching failed file row whose bytes are still there: the file moves from
failed/ back into a fresh claim folder in the work area (one rename; a file
recorded in place, by a backfill, stays where it is), its row becomes `queued`
again (`reka_ingest.ledger.retry`), and the files are packed into batches by the
watcher's `Batcher` (its count and byte limits) and enqueued. A batch whose
message cannot be sent is still in the ledger: beat's sweep sends it later.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from reka_ingest.core.queues import send_upload
from reka_ingest.core.settings import IngestSettings, Settings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.files.hashing import digest_file
from reka_ingest.files.outbox import ERROR_SUFFIX, in_work_area
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.reconcile import send_each
from reka_ingest.ledger.retry import FailedFile, Requeue, failed_files, requeue_failed
from scheduler.batcher import ledger_batchers
from scheduler.enqueue import producer_app

RETRY_FOLDER_PREFIX = "retry-"
# The merged sidecar of these is what failed; only dropping the image again with a
# fixed sidecar re-reads it.
NOT_RETRIABLE = {
    Reason.BAD_SIDECAR: "re-drop the image with its fixed sidecar into the inbox",
    Reason.ORPHAN_SIDECAR: "a sidecar without an image has nothing to upload",
}


@dataclass(frozen=True, slots=True)
class Retried:
    """What one retry did: the new batches, how many files they hold, the paths not
    retried (by why), and why the batches could not be sent now (beat sends them)."""

    batches: list[int]
    files: int
    skipped: dict[str, list[str]] = field(default_factory=dict)
    send_error: str | None = None


def _bytes_at(settings: IngestSettings, f: FailedFile) -> Path | None:
    """Where the failed file's bytes are now: failed/ (beside its reason file), or in place.

    A file whose indexing failed was sent first, so until the poll sweep settles
    it (or when its move failed) its `final_path` is where the upload put it
    (done/); that counts too. So it is for an expired or deleted file: done/ (or
    the work area, with INGEST_AFTER_UPLOAD=keep); with `delete`, nowhere.
    """
    if not in_work_area(settings, f.work_path):
        candidates = [Path(f.work_path)]
    else:
        candidates = [Path(f.work_path)]  # never moved (the outbox could not)
        if f.final_path and f.final_path.endswith(ERROR_SUFFIX):
            candidates.insert(0, Path(f.final_path[: -len(ERROR_SUFFIX)]))
        elif f.final_path:
            candidates.insert(0, Path(f.final_path))
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            return path
    return None


def _move_into_work(settings: IngestSettings, src: Path) -> Path:
    """`src` into a new claim folder `work/retry-<token>/NAME`, by one rename when it can."""
    folder = settings.work_dir / f"{RETRY_FOLDER_PREFIX}{secrets.token_hex(8)}"
    folder.mkdir(parents=True)
    target = folder / src.name
    try:
        os.rename(src, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            folder.rmdir()
            raise
        # failed/ on another filesystem: copy beside the target, then one rename.
        tmp = folder / f".{src.name}.part"
        shutil.copy2(src, tmp)
        os.replace(tmp, target)
        src.unlink()
    return target


def _source(ingest: IngestSettings, f: FailedFile) -> Path | str:
    """The file's bytes to send again, or why it cannot be retried."""
    if f.reason in NOT_RETRIABLE:
        return NOT_RETRIABLE[Reason(f.reason)]
    if f.duplicate_of is not None:
        return f"a copy of file {f.duplicate_of}: retry that one"
    src = _bytes_at(ingest, f)
    return src if src is not None else "bytes missing (not in failed/ nor where they were)"


def _url_source(f: FailedFile) -> str | None:
    """Why a failed URL row cannot be sent again as it is (None: it can)."""
    if f.reason in NOT_RETRIABLE:
        return NOT_RETRIABLE[Reason(f.reason)]
    if f.duplicate_of is not None:
        return f"a copy of file {f.duplicate_of}: retry that one"
    if f.sha256 is None:  # failed at intake: the line itself is not a usable URL
        return "not a usable URL as written: fix the line and drop the list again"
    return None


def requeue(
    ingest: IngestSettings, ledger: Ledger, *, reason: str | None, path_glob: str | None
) -> tuple[list[int], int, dict[str, list[str]]]:
    """Move, reset and batch matching failed files.

    Returns the new batch ids, how many files they hold, and the paths not
    retried, by why.
    """
    skipped: dict[str, list[str]] = {}
    ready: list[Requeue] = []
    url_ids: set[int] = set()
    for f in failed_files(ledger, reason=reason, path_glob=path_glob):
        if f.origin == Origin.URL:  # no bytes to move back: sent again by its URL
            why = _url_source(f)
            if why is None and f.sha256:
                ready.append(Requeue(f.id, f.work_path, 0, f.sha256, f.state))
                url_ids.add(f.id)
            else:
                skipped.setdefault(why or "no URL on record", []).append(f.path)
            continue
        src = _source(ingest, f)
        if isinstance(src, str):
            skipped.setdefault(src, []).append(f.path)
            continue
        in_place = not in_work_area(ingest, f.work_path)
        try:
            digest = digest_file(src)
            work = src if in_place else _move_into_work(ingest, src)
        except OSError as err:
            skipped.setdefault(f"cannot be read or moved ({err.strerror})", []).append(f.path)
            continue
        if not in_place and f.final_path and f.final_path.endswith(ERROR_SUFFIX):
            with contextlib.suppress(OSError):  # the reason file no longer applies
                Path(f.final_path).unlink()
        ready.append(Requeue(f.id, str(work), digest.size, digest.sha256, f.state))
    now = time.time()
    reset = set(requeue_failed(ledger, ready, now=now))
    # Packed by the watcher's rule; the caller enqueues the batches itself.
    batcher, url_batcher = ledger_batchers(ingest, ledger, lambda _batch_id: None, lambda: now)
    batches = batcher.add_many(
        (r.file_id, r.size) for r in ready if r.file_id in reset and r.file_id not in url_ids
    )
    batches += batcher.flush()
    # URL rows in batches of their own (a request is one kind), by count only.
    batches += url_batcher.add_many((i, 0) for i in sorted(url_ids & reset))
    batches += url_batcher.flush()
    return batches, len(reset), skipped


def send_batches(settings: Settings, ledger: Ledger, batches: list[int]) -> str | None:
    """Enqueue `batches`; None when sent, else why not (the ledger holds them, marked
    unsent, and beat's sweep sends them at its next tick)."""
    if not batches:
        return None
    app = producer_app(settings)
    try:
        return send_each(ledger, batches, lambda batch_id: send_upload(app, batch_id))
    finally:
        app.close()


def retry_failed(
    settings: Settings, ledger: Ledger, *, reason: str | None, path_glob: str | None = None
) -> Retried:
    """Requeue the matching failed files and enqueue their batches."""
    batches, files, skipped = requeue(settings.ingest, ledger, reason=reason, path_glob=path_glob)
    return Retried(batches, files, skipped, send_batches(settings, ledger, batches))
