"""What `reka-ingest retry` reads and writes: failed rows to try again (and,
asked by their reason, `expired` or `deleted` rows: their images are gone from
Reka), and turning them back into `queued` rows once their bytes are back in place.

Reading and writing are separate on purpose: between them the command moves
each file back into the work area, and only a row whose file moved is reset.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, select, update

from reka_ingest.core.states import RETRIABLE_BY_REASON, FileState, Reason
from reka_ingest.ledger.bulk import in_id_order
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import File


@dataclass(frozen=True, slots=True)
class FailedFile:
    id: int
    path: str  # as the user dropped it
    reason: str | None
    work_path: str  # where it sat before its outcome (or where it lives, for in-place rows)
    final_path: str | None  # its NAME.error.json, when the outbox wrote one (or done/ NAME)
    duplicate_of: int | None
    state: str = FileState.FAILED
    origin: str = ""  # `url`: a line of an image URL list (no bytes; sent again by its URL)
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Requeue:
    """A failed row whose bytes are now at `work_path`, with what they hash to."""

    file_id: int
    work_path: str
    size: int
    sha256: str
    state: str = FileState.FAILED  # the state it was read in; a row since changed is left


def failed_files(
    ledger: Ledger, *, reason: str | None = None, path_glob: str | None = None
) -> list[FailedFile]:
    """Failed rows, optionally only those with `reason` and a path matching `path_glob`.

    `reason` `expired` or `deleted` names the rows in that state instead (their
    images are gone from Reka; they are sent again only when asked by name).
    """
    by_name = {state.value for state in RETRIABLE_BY_REASON}
    state = reason if reason in by_name else FileState.FAILED
    query = select(File).where(File.state == state).order_by(File.id)
    if reason is not None:
        query = query.where(File.reason == reason)
    with ledger.read() as s:
        rows = [
            FailedFile(
                r.id,
                r.path,
                r.reason,
                r.work_path,
                r.final_path,
                r.duplicate_of,
                str(r.state),
                str(r.origin),
                r.sha256,
            )
            for r in s.scalars(query)
        ]
    if path_glob is None:
        return rows
    return [r for r in rows if fnmatch.fnmatchcase(r.path, path_glob)]


def requeue_failed(ledger: Ledger, files: Sequence[Requeue], *, now: float) -> list[int]:
    """Reset failed (or expired, deleted) rows to `queued` (no batch yet) at their new
    work path; returns their ids.

    Kept: identity and history (`path`, `seen_at`, `attempts`, `origin`). Cleared:
    the outcome (reason, message, finish time, final path) and any earlier upload
    result, since the file is sent again as new. A row no longer in the state it
    was read in (a second run) is left alone. Rows that failed only as copies of a
    requeued file are `duplicate`s of it again, and follow its new outcome.
    """
    done: list[int] = []
    with ledger.write() as s:
        for f in sorted(files, key=_file_id):  # id order, as every writer locks rows
            changed = s.execute(
                update(File)
                .where(File.id == f.file_id, File.state == f.state)
                .values(
                    state=FileState.QUEUED,
                    work_path=f.work_path,
                    size=f.size,
                    sha256=f.sha256,
                    reason=None,
                    message=None,
                    batch_id=None,
                    final_path=None,
                    finished_at=None,
                    queued_at=now,
                    image_id=None,
                    image_url=None,
                    indexing_status=None,
                    upload_timestamp=None,
                    upload_request_id=None,
                    poll_request_id=None,
                    uploaded_at=None,
                    indexed_at=None,
                    next_poll_at=None,
                    poll_delay=None,
                    # possible_duplicate is kept: an earlier request may have put
                    # these bytes on the server, and the retry may add a second copy.
                    updated_at=now,
                )
            )
            if changed.rowcount:  # type: ignore[attr-defined]  # CursorResult for an UPDATE
                done.append(f.file_id)
        if done:
            for file_id in done:
                s.execute(
                    update(File)
                    .where(
                        in_id_order(
                            and_(File.duplicate_of == file_id, File.state == FileState.FAILED)
                        )
                    )
                    .values(
                        state=FileState.DUPLICATE,
                        reason=Reason.DUPLICATE_CONTENT,
                        message=f"same bytes as file {file_id}",
                        image_id=None,
                        image_url=None,
                        updated_at=now,
                    )
                )
    return done


def _file_id(f: Requeue) -> int:
    return f.file_id
