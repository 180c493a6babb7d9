"""Table definitions. Times are seconds since the epoch (float): portable
across SQLite and PostgreSQL and cheap to compare in SQL."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from reka_ingest.core.states import FileState
from reka_ingest.ledger.columns import BoundedString, KeyText, SafeJSON, SafeText

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Foreign text is bounded before it reaches a column (see reka_ingest.core.text): the
# longest path kept, and the longest message. Every text column is one of the types
# in reka_ingest.ledger.columns, which makes any str storable (no NUL, no lone
# surrogate, cut to fit) on SQLite and PostgreSQL; byte counts are BigInteger.
MAX_PATH_CHARS = 8192
MAX_MESSAGE_CHARS = 4000
# The longest image id kept whole (Reka's are far shorter): an id is sent back to
# poll, so it is stored as text rather than cut at a small VARCHAR's length.
MAX_ID_CHARS = 512

# The condition of the partial index of failed rows; a query that should use it
# says it in these words (a bound parameter would not match the index's predicate).
FAILED_ONLY = f"state = '{FileState.FAILED.value}'"
# The condition of the partial index of queued rows without a batch (the same rule).
UNBATCHED_ONLY = f"state = '{FileState.QUEUED.value}' AND batch_id IS NULL"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(BoundedString(16), index=True)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The number of the claim that holds (or last held) the batch: each claim takes
    # the next, and a run's writes name it (a run whose lease ran out stops).
    claim_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The process that made the last claim (reka_ingest.core.holder); None: not known.
    claimed_by: Mapped[str | None] = mapped_column(BoundedString(160), default=None)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    queued_at: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    lease_until: Mapped[float | None] = mapped_column(Float, default=None)
    next_attempt_at: Mapped[float | None] = mapped_column(Float, default=None, index=True)
    request_id: Mapped[str | None] = mapped_column(BoundedString(128), default=None)
    last_error: Mapped[str | None] = mapped_column(SafeText(MAX_MESSAGE_CHARS), default=None)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_state_next_poll_at", "state", "next_poll_at"),
        Index("ix_files_sha256_state", "sha256", "state"),
        # The first file seen in each state (status, the oldest active file): one probe each.
        Index("ix_files_state_seen_at", "state", "seen_at"),
        # The drop-to-indexed histogram (metrics): read from the index alone.
        Index("ix_files_state_indexed_at_seen_at", "state", "indexed_at", "seen_at"),
        # Failed rows by path: the failures a file dropped again supersedes (intake),
        # without reading every failed row. A hash index on PostgreSQL (a path may
        # exceed a btree entry's size); partial, so only failed rows pay for it.
        Index(
            "ix_files_failed_path",
            "path",
            postgresql_using="hash",
            postgresql_where=text(FAILED_ONLY),
            sqlite_where=text(FAILED_ONLY),
        ),
        # Queued rows without a batch, by when they became so (a row's last write):
        # a few at any moment, found by the beat sweep without reading every queued
        # or unbatched row (`reconcile.batch_stranded`).
        Index(
            "ix_files_unbatched",
            "updated_at",
            postgresql_where=text(UNBATCHED_ONLY),
            sqlite_where=text(UNBATCHED_ONLY),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Where the user put it (relative to the inbox or the scanned root) and where it is now.
    path: Mapped[str] = mapped_column(SafeText(MAX_PATH_CHARS))
    source_root: Mapped[str] = mapped_column(SafeText(MAX_PATH_CHARS))
    work_path: Mapped[str] = mapped_column(KeyText(), unique=True)
    final_path: Mapped[str | None] = mapped_column(SafeText(MAX_PATH_CHARS), default=None)
    origin: Mapped[str] = mapped_column(BoundedString(16), index=True)  # an Origin
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str | None] = mapped_column(BoundedString(64), default=None)
    sidecar: Mapped[dict[str, object] | None] = mapped_column(SafeJSON, default=None)
    index_flag: Mapped[bool] = mapped_column(Boolean, default=True)
    content_type: Mapped[str | None] = mapped_column(BoundedString(64), default=None)

    state: Mapped[str] = mapped_column(BoundedString(16), index=True)
    reason: Mapped[str | None] = mapped_column(BoundedString(32), default=None, index=True)
    message: Mapped[str | None] = mapped_column(SafeText(MAX_MESSAGE_CHARS), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), default=None, index=True)
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("files.id"), default=None, index=True
    )
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    # A `superseded` row: the later row of the same file dropped again (reka_ingest.ledger.intake).
    superseded_by: Mapped[int | None] = mapped_column(Integer, default=None, index=True)

    image_id: Mapped[str | None] = mapped_column(SafeText(MAX_ID_CHARS), default=None, index=True)
    image_url: Mapped[str | None] = mapped_column(SafeText(), default=None)
    indexing_status: Mapped[int | None] = mapped_column(Integer, default=None)
    upload_timestamp: Mapped[float | None] = mapped_column(Float, default=None)
    upload_request_id: Mapped[str | None] = mapped_column(BoundedString(128), default=None)
    # How the bytes sent were made from the file's, when they were not the file's own
    # (HEIC/HEIF, AVIF sent as JPEG): `HEIF -> JPEG (quality 90)`. sha256 and size stay
    # the original's.
    conversion: Mapped[str | None] = mapped_column(BoundedString(64), default=None)
    poll_request_id: Mapped[str | None] = mapped_column(BoundedString(128), default=None)
    next_poll_at: Mapped[float | None] = mapped_column(Float, default=None)
    poll_delay: Mapped[float | None] = mapped_column(Float, default=None)
    polls: Mapped[int] = mapped_column(Integer, default=0)

    seen_at: Mapped[float] = mapped_column(Float)
    queued_at: Mapped[float | None] = mapped_column(Float, default=None)
    uploaded_at: Mapped[float | None] = mapped_column(Float, default=None)
    indexed_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None, index=True)
    updated_at: Mapped[float] = mapped_column(Float)


class FileCount(Base):
    """Files counted by (state, origin, reason, latency bucket), kept exact by triggers
    on `files` (migration 0005, reka_ingest.ledger.counts): `status` and the metrics
    read these few rows, never the whole `files` index. `reason` is '' for none;
    `bucket` -1 outside the drop-to-indexed histogram; `shard` spreads concurrent
    writers over rows (PostgreSQL: each adds to a row no other holds, migration 0010),
    so a reader sums over it."""

    __tablename__ = "file_counts"

    state: Mapped[str] = mapped_column(BoundedString(16), primary_key=True)
    origin: Mapped[str] = mapped_column(BoundedString(16), primary_key=True)
    reason: Mapped[str] = mapped_column(BoundedString(32), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    latency_sum: Mapped[float] = mapped_column(Float)


class BatchCount(Base):
    """Batches counted by state, kept exact by triggers on `batches` (migration 0009,
    reka_ingest.ledger.counts): a metrics scrape reads these few rows, never the whole
    `batches` index. `shard` spreads concurrent writers over rows (PostgreSQL: each adds
    to a row no other holds), so a reader sums over it."""

    __tablename__ = "batch_counts"

    state: Mapped[str] = mapped_column(BoundedString(16), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
