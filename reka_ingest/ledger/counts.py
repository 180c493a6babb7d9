"""The ledger's counts, read from `file_counts` (kept exact by triggers on `files`,
migration 0005): files by state, by origin, failed files by reason, and the
drop-to-indexed histogram; and from `batch_counts` (triggers on `batches`,
migration 0009): batches by state. A few dozen rows whatever the ledger's size,
where a `GROUP BY` over `files` or `batches` reads a whole index (a million
entries in a big ledger, one per batch ever made).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from reka_ingest.core.states import FileState
from reka_ingest.ledger.schema import BatchCount, FileCount

# Seconds from a file being seen to it being indexed. The daily quota can hold a file
# for hours, so the buckets reach a day. Frozen in migration 0005's triggers: a
# change here needs a migration that rebuilds them (a test holds the two equal).
LATENCY_BUCKETS: Final = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
NO_REASON: Final = ""


def _sum_by(
    session: Session,
    column: InstrumentedAttribute[str],
    *where: ColumnElement[bool],
    counted: InstrumentedAttribute[int] = FileCount.n,
) -> dict[str, int]:
    """`column`'s value -> its count summed over the shards (zero counts left out)."""
    n = func.sum(counted)
    rows = session.execute(select(column, n).where(*where).group_by(column).having(n != 0)).all()
    return {str(label): int(count) for label, count in rows}


def files_by_state(session: Session) -> dict[str, int]:
    """State -> files in it (states with none left out)."""
    return _sum_by(session, FileCount.state)


def batches_by_state(session: Session) -> dict[str, int]:
    """State -> batches in it (states with none left out)."""
    return _sum_by(session, BatchCount.state, counted=BatchCount.n)


def files_by_origin(session: Session) -> dict[str, int]:
    return _sum_by(session, FileCount.origin)


def failed_by_reason(session: Session) -> dict[str | None, int]:
    """Reason -> failed files with it; None for failed rows without one."""
    counts = _sum_by(session, FileCount.reason, FileCount.state == FileState.FAILED)
    return {(None if reason == NO_REASON else reason): n for reason, n in counts.items()}


@dataclass(frozen=True, slots=True)
class Histogram:
    """Indexed files by drop-to-indexed seconds: `cumulative[i]` within LATENCY_BUCKETS[i]."""

    cumulative: list[int]
    count: int
    total_seconds: float


def indexed_latency(session: Session) -> Histogram:
    rows = session.execute(
        select(FileCount.bucket, func.sum(FileCount.n), func.sum(FileCount.latency_sum))
        .where(FileCount.state == FileState.INDEXED, FileCount.bucket >= 0)
        .group_by(FileCount.bucket)
    ).all()
    per_bucket = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for bucket, n, seconds in rows:
        per_bucket[min(int(bucket), len(LATENCY_BUCKETS))] += int(n or 0)
        total += float(seconds or 0.0)
    cumulative, running = [], 0
    for n in per_bucket[:-1]:
        running += n
        cumulative.append(running)
    count = running + per_bucket[-1]
    return Histogram(cumulative, count, total if count else 0.0)
