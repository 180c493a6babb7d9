"""What the beat sweep takes back: batches whose wait is over, batches whose
message or worker was lost, batches whose message could not be sent, and queued
rows whose batch was never made. The ledger is the truth; sending a batch's id
again is always safe, because the claim admits one run at a time."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from sqlalchemy import TextClause, or_, select, text, union_all, update

from reka_ingest.core import holder
from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import BatchState, Origin
from reka_ingest.ledger.db import IN_CHUNK, Ledger
from reka_ingest.ledger.intake import create_batches, pack
from reka_ingest.ledger.schema import UNBATCHED_ONLY, Batch

log = get_logger(__name__)


def batches_to_send(ledger: Ledger, *, now: float, requeue_after: float, limit: int) -> list[int]:
    """Ids of batches to enqueue now; each is marked as (re)queued at `now`.

    - deferred batches whose `next_attempt_at` has come;
    - queued batches whose message could not be sent (`mark_unsent`: no `queued_at`);
    - queued batches not taken for `requeue_after` seconds (a lost message);
    - uploading batches whose lease ran out (a dead worker), or whose holder was a
      process of this machine that no longer runs (`reka_ingest.core.holder`: at
      once, not a lease later).
    """
    deferred = (Batch.state == BatchState.DEFERRED) & (Batch.next_attempt_at <= now)
    unsent = (Batch.state == BatchState.QUEUED) & Batch.queued_at.is_(None)
    lost = (Batch.state == BatchState.QUEUED) & (Batch.queued_at < now - requeue_after)
    expired = (Batch.state == BatchState.UPLOADING) & (Batch.lease_until < now)
    with ledger.read() as s:  # the batches in flight: a few per worker process
        held = s.execute(
            select(Batch.id, Batch.claimed_by).where(
                Batch.state == BatchState.UPLOADING,
                Batch.lease_until >= now,
                # Not sent since its claim: an orphan gets one message, not one a tick.
                or_(Batch.queued_at.is_(None), Batch.queued_at <= Batch.started_at),
            )
        ).all()
    orphaned = [r.id for r in held if holder.gone(r.claimed_by)][:limit]
    kinds = (deferred, unsent, lost, expired) + (
        ((Batch.state == BatchState.UPLOADING) & Batch.id.in_(orphaned),) if orphaned else ()
    )
    # Each kind found by its own index (SQLite walks every batch for the OR alone: a
    # sweep's cost grew with the ledger); the OR is checked again on the row locked.
    candidates = union_all(*(select(Batch.id).where(kind) for kind in kinds))
    with ledger.write() as s:
        ids = list(
            s.scalars(
                select(Batch.id)
                .where(Batch.id.in_(candidates.scalar_subquery()), or_(*kinds))
                .order_by(Batch.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            s.execute(
                update(Batch)
                .where(Batch.id.in_(ids), Batch.state == BatchState.DEFERRED)
                .values(state=BatchState.QUEUED, next_attempt_at=None)
            )
            s.execute(update(Batch).where(Batch.id.in_(ids)).values(queued_at=now))
        return ids


def mark_unsent(ledger: Ledger, batch_ids: Sequence[int]) -> None:
    """Batches whose message could not be sent (the broker down, unreachable): the
    beat sweep sends them at its next tick, not INGEST_REQUEUE_AFTER later. A
    message that went out after all is harmless (the claim admits one run)."""
    ids = list(batch_ids)
    with ledger.write() as s:
        for i in range(0, len(ids), IN_CHUNK):
            s.execute(
                update(Batch)
                .where(Batch.id.in_(ids[i : i + IN_CHUNK]), Batch.state == BatchState.QUEUED)
                .values(queued_at=None)
            )


def mark_all_unsent(ledger: Ledger, *, sent_before: float) -> int:
    """Every queued batch whose message went out before `sent_before` is marked
    unsent (`mark_unsent`), so the sweep sends it again at once: the broker lost
    what it held (`worker.broker_loss`), so those messages are gone. How many.

    The rows are locked in id order (SKIP LOCKED: a batch being claimed now has its
    message), so two sweeps doing this at once never wait for each other in a cycle.
    """
    queued = (Batch.state == BatchState.QUEUED) & (Batch.queued_at < sent_before)
    with ledger.write() as s:
        ids = list(
            s.scalars(
                select(Batch.id).where(queued).order_by(Batch.id).with_for_update(skip_locked=True)
            )
        )
        for i in range(0, len(ids), IN_CHUNK):
            s.execute(
                update(Batch).where(Batch.id.in_(ids[i : i + IN_CHUNK])).values(queued_at=None)
            )
    return len(ids)


def send_each(
    ledger: Ledger, batch_ids: Sequence[int], send: Callable[[int], object]
) -> str | None:
    """Send each batch (`send(batch_id)`); None when all went, else why not. At the
    first send that fails, that batch and the rest are marked unsent (`mark_unsent`),
    so the sweep sends them as soon as it can; if even that write fails, they wait
    INGEST_REQUEUE_AFTER as any lost message does."""
    ids = list(batch_ids)
    for n, batch_id in enumerate(ids):
        try:
            send(batch_id)
        except Exception as err:  # noqa: BLE001 - any broker error: the ledger keeps the batches
            why = type(err).__name__  # its text may name the broker's URL
            try:
                mark_unsent(ledger, ids[n:])
            except Exception:  # noqa: BLE001 - the ledger out as well: the lost-message rule applies
                log.warning("batches_unsent_not_marked", batches=ids[n:], error=why)
            return why
    return None


def batch_stranded(
    ledger: Ledger, *, now: float, older_than: float, max_files: int, max_bytes: int, limit: int
) -> list[int]:
    """New batches for queued rows left without one for `older_than` seconds; their
    ids, to send.

    A queued row gets its batch from the process that recorded it or queued it
    again, moments later. One that lost track of it (its COMMIT's answer lost, a
    crash between the two writes) would leave it queued for good, unseen until the
    watcher's next start. Its oldest `limit` such rows are batched here: file rows
    and URL rows apart (a request is one kind), within the batch limits.
    `create_batches` takes only rows still unbatched, so a batcher that meanwhile
    made the batch itself costs nothing but a second send of it.
    """
    with ledger.read() as s:
        query = _stranded_rows(s.get_bind().dialect.name)
        rows = s.execute(query, {"before": now - older_than, "limit": limit}).all()
    if not rows:
        return []
    files = pack(
        ((r.id, r.size) for r in rows if r.origin != Origin.URL),
        max_files=max_files,
        max_bytes=max_bytes,
    )
    url_ids = ((r.id, 0) for r in rows if r.origin == Origin.URL)  # no bytes here: by count
    urls = pack(url_ids, max_files=max_files, max_bytes=sys.maxsize)
    return create_batches(ledger, files + urls, now=now)


def _stranded_rows(dialect: str) -> TextClause:
    """The oldest queued rows without a batch, through `ix_files_unbatched`: its
    partial condition in its own words, and on SQLite named (without statistics its
    planner would take a state index and read every queued row)."""
    hint = " INDEXED BY ix_files_unbatched" if dialect == "sqlite" else ""
    return text(
        f"SELECT id, size, origin FROM files{hint} WHERE {UNBATCHED_ONLY}"  # noqa: S608 - fixed words; values bound
        " AND updated_at < :before ORDER BY updated_at, id LIMIT :limit"
    )
