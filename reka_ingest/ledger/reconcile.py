"""What the beat sweep takes back: batches whose wait is over, and batches
whose message or worker was lost. The ledger is the truth; sending a batch's
id again is always safe, because the claim admits one run at a time."""

from __future__ import annotations

from sqlalchemy import or_, select, union_all, update

from reka_ingest.core.states import BatchState
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import Batch


def batches_to_send(ledger: Ledger, *, now: float, requeue_after: float, limit: int) -> list[int]:
    """Ids of batches to enqueue now; each is marked as (re)queued at `now`.

    - deferred batches whose `next_attempt_at` has come;
    - queued batches not taken for `requeue_after` seconds (a lost message);
    - uploading batches whose lease ran out (a dead worker).
    """
    deferred = (Batch.state == BatchState.DEFERRED) & (Batch.next_attempt_at <= now)
    lost = (Batch.state == BatchState.QUEUED) & (Batch.queued_at < now - requeue_after)
    expired = (Batch.state == BatchState.UPLOADING) & (Batch.lease_until < now)
    # Each kind found by its own index (SQLite walks every batch for the OR alone: a
    # sweep's cost grew with the ledger); the OR is checked again on the row locked.
    candidates = union_all(*(select(Batch.id).where(kind) for kind in (deferred, lost, expired)))
    with ledger.write() as s:
        ids = list(
            s.scalars(
                select(Batch.id)
                .where(Batch.id.in_(candidates.scalar_subquery()), or_(deferred, lost, expired))
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
