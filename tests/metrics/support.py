"""Reading a metrics page back as numbers, and writing ledger rows by hand."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from reka_ingest.ledger import Ledger
from reka_ingest.ledger.schema import Batch, File


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on a metrics page: (name, labels) -> value."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return page[(name, frozenset(labels.items()))]


def add_file(
    ledger: Ledger,
    n: int,
    *,
    state: str,
    origin: str = "event",
    seen_at: float = 1000.0,
    indexed_at: float | None = None,
    reason: str | None = None,
    batch_id: int | None = None,
) -> int:
    with ledger.write() as s:
        row = File(
            path=f"f{n}.jpg",
            source_root="/inbox",
            work_path=f"/work/f{n}.jpg",
            origin=origin,
            size=100,
            mtime=0.0,
            state=state,
            reason=reason,
            seen_at=seen_at,
            indexed_at=indexed_at,
            batch_id=batch_id,
            updated_at=seen_at,
        )
        s.add(row)
        s.flush()
        return row.id


def add_batch(ledger: Ledger, *, state: str, last_error: str | None = None) -> int:
    with ledger.write() as s:
        row = Batch(state=state, created_at=1000.0, last_error=last_error)
        s.add(row)
        s.flush()
        return row.id
