"""What the beat sweep takes back: batches whose wait is over, and batches
whose message or worker was lost. The ledger is the truth; sending a batch's
id again is always safe, because the claim admits one run at a time."""

from __future__ import annotations

from sqlalchemy import or_, select, update

from reka_ingest.core.states import BatchState
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import Batch


def batches_to_send(ledger: Ledger, *, now: float, requeue_after: float, limit: int) -> list[int]:
    """Ids of batches to enqueue now; each is marked as (re)queued at `now`.

    - deferred batches whose `next_attempt_at` has come;
    - queued batches not taken for `requeue_after` seconds (a lost message);
    - uploading batches whose lease ran out (a dead worker).
    """
    with ledger.write() as s:
        ids = list(
            s.scalars(
                select(Batch.id)
                .where(
                    or_(
                        (Batch.state == BatchState.DEFERRED) & (Batch.next_attempt_at <= now),
                        (Batch.state == BatchState.QUEUED)
                        & (Batch.queued_at < now - requeue_after),
                        (Batch.state == BatchState.UPLOADING) & (Batch.lease_until < now),
                    )
                )
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
