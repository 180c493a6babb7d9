"""The states a file and a batch move through, and the reason codes of failures.

States are `str` enums so they store as readable text in the ledger and print
as themselves; the named sets below are the only place that says which states
are final.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final


class FileState(StrEnum):
    QUEUED = "queued"  # recorded, waiting for (or in) a batch that has not been sent
    UPLOADING = "uploading"  # its batch's request is in flight
    INDEXING = "indexing"  # uploaded; Reka is indexing it; polled until done
    INDEXED = "indexed"  # indexing_status 2: searchable
    STORED = "stored"  # uploaded with index: false (indexing_status 0)
    DUPLICATE = "duplicate"  # the same bytes were uploaded before; points at that image_id
    FAILED = "failed"  # with a reason code and a message a person can read
    # Uploaded once, but Reka no longer holds the image (its retention ran out, or it
    # was deleted elsewhere): found by `reka-ingest check --fix`; `retry --reason
    # expired` sends the kept bytes again.
    EXPIRED = "expired"
    DELETED = "deleted"  # its image deleted from Reka on request (`reka-ingest delete`)
    # Left in place by INGEST_INCLUDE / INGEST_EXCLUDE: never claimed, never sent, counted.
    EXCLUDED = "excluded"
    # A failed row whose file was dropped again (same path in the same source root,
    # recorded later as a new row: `superseded_by`); kept as history, no longer failed.
    SUPERSEDED = "superseded"


TERMINAL: Final = frozenset(
    {
        FileState.INDEXED,
        FileState.STORED,
        FileState.DUPLICATE,
        FileState.FAILED,
        FileState.EXPIRED,
        FileState.DELETED,
        FileState.EXCLUDED,
        FileState.SUPERSEDED,
    }
)
ACTIVE: Final = frozenset(set(FileState) - TERMINAL)
UPLOADED: Final = frozenset({FileState.INDEXING, FileState.INDEXED, FileState.STORED})
# A row in these states is never the original a copy of its bytes points at (an
# expired or deleted row's image is gone from Reka, so new copies are uploaded).
NOT_ORIGINALS: Final = (
    FileState.FAILED,
    FileState.DUPLICATE,
    FileState.EXPIRED,
    FileState.DELETED,
    FileState.EXCLUDED,
    FileState.SUPERSEDED,
)
# Rows whose image Reka should hold: `reka-ingest check` asks it about these.
ON_SERVER: Final = frozenset({FileState.INDEXED, FileState.STORED})
# Final rows `reka-ingest retry` sends again only when asked by their reason.
RETRIABLE_BY_REASON: Final = frozenset({FileState.EXPIRED, FileState.DELETED})


class BatchState(StrEnum):
    QUEUED = "queued"  # enqueued as upload_batch(batch_id)
    UPLOADING = "uploading"  # a worker holds it, under a lease
    DEFERRED = "deferred"  # waits for a time in `next_attempt_at` (quota, backoff)
    DONE = "done"  # every file got an outcome from this batch
    SPLIT = "split"  # replaced by two smaller batches after a 413


BATCH_TERMINAL: Final = frozenset({BatchState.DONE, BatchState.SPLIT})


class Reason(StrEnum):
    """Why a file failed (or was flagged); stored in the ledger and in NAME.error.json."""

    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED_IMAGE = "truncated_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_LARGE = "too_large"
    BAD_SIDECAR = "bad_sidecar"
    ORPHAN_SIDECAR = "orphan_sidecar"
    FILE_MISSING = "file_missing"
    UNREADABLE = "unreadable"
    NEVER_STABLE = "never_stable"
    REFUSED_PATH = "refused_path"
    API_REJECTED = "api_rejected"
    AUTH_FAILED = "auth_failed"
    UPLOAD_FAILED = "upload_failed"
    INDEXING_FAILED = "indexing_failed"
    INDEXING_TIMEOUT = "indexing_timeout"
    DUPLICATE_CONTENT = "duplicate_content"
    # The service itself failed on this one file (an unexpected error while
    # looking at, claiming, describing or recording it): the file fails alone.
    INTAKE_FAILED = "intake_failed"
    # A sidecar that came after its image had already been taken.
    LATE_SIDECAR = "late_sidecar"
    # Uploaded (the server stored it: its image id is in the message), but the
    # ledger refused to record that answer until the batch's attempts ran out.
    RECORD_FAILED = "record_failed"
    # Reka no longer holds the uploaded image (state `expired`, by `check --fix`).
    EXPIRED = "expired"
    # The image was deleted from Reka on request (state `deleted`, by `reka-ingest delete`).
    DELETED = "deleted"
    # A line of an image URL list (`*.urls`, `*.urls.csv`) that is not an http(s) URL,
    # or that the API could not fetch.
    BAD_URL = "bad_url"
    # Its folders do not fit INGEST_PATH_METADATA (with INGEST_PATH_METADATA_MISMATCH=fail).
    PATH_MISMATCH = "path_mismatch"
    # HEIC/HEIF or AVIF that could not be converted to JPEG for the upload.
    CONVERSION_FAILED = "conversion_failed"
    # Left out by INGEST_INCLUDE / INGEST_EXCLUDE (state `excluded`; the rule is in the message).
    EXCLUDED = "excluded"


# The reasons a row carries in a state of its own, never `failed`: a duplicate's, a
# file left out by the include/exclude rules, and a final row whose image Reka no
# longer holds (expired) or was asked to delete.
STATE_REASONS: Final = MappingProxyType(
    {
        FileState.DUPLICATE: Reason.DUPLICATE_CONTENT,
        FileState.EXCLUDED: Reason.EXCLUDED,
        FileState.EXPIRED: Reason.EXPIRED,
        FileState.DELETED: Reason.DELETED,
    }
)
# What `reka-ingest retry --reason` (and the web page's retry button) can match: any
# reason a failed row can carry, and the final states retried by their name.
RETRY_REASONS: Final = frozenset(r for r in Reason if r not in STATE_REASONS.values()) | {
    STATE_REASONS[s] for s in RETRIABLE_BY_REASON
}


class Origin(StrEnum):
    """How a file was found; stored with its row (the metrics count files by it)."""

    EVENT = "event"  # a watchdog event in the inbox
    SCAN = "scan"  # the inbox scan at start and every INGEST_SCAN_INTERVAL
    BACKFILL = "backfill"  # `reka-ingest backfill` of an existing tree, recorded in place
    RECOVERY = "recovery"  # claimed before a crash, recorded at the watcher's next start
    URL = "url"  # a line of an image URL list: no bytes here, the API fetches the URL


class BatchOutcome(StrEnum):
    """What one run of `upload_batch` did; the batch's canonical log line says it."""

    SKIPPED = "skipped"  # not taken: gone, final, held by another run, or not due yet
    DONE = "done"  # the request went out and every file got its result
    SPLIT = "split"  # replaced by two halves (413, or a 400 in a batch of several)
    DEFERRED = "deferred"  # waits in the ledger for a time (budget, backoff)
    FAILED = "failed"  # its files failed (rejected, or out of attempts)


class WaitReason(StrEnum):
    """Why the shared API budget says to wait (`worker.budget.Wait.why`)."""

    DAILY_LIMIT = "daily_limit"  # the day's requests are used up
    PER_SECOND = "per_second"  # INGEST_UPLOADS_PER_SECOND reached this second
    SERVER_PAUSE = "server_pause"  # the server asked every worker to wait (429, remaining 0)
    REDIS_UNAVAILABLE = "redis_unavailable"  # the shared count cannot be read
