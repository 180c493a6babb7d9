"""What the notifications read from the ledger (read only): folders whose files
finished lately, the state of one folder's drop, and the failures of a window.

A file's folder is the first segment of its `path` (relative to the inbox, or
to the scanned root for a backfill), with its `source_root`: `cams/a/1.jpg`
dropped in the inbox is in folder `cams` of that inbox; a file dropped straight
into the inbox is in the root folder, named `""` here (`.` in events).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select

from reka_ingest.core.states import ACTIVE, FileState
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import File


@dataclass(frozen=True, slots=True, order=True)
class Folder:
    """A top-level folder of a root (`name` "" is the root itself)."""

    root: str
    name: str


@dataclass(frozen=True, slots=True)
class Drop:
    """The files of one folder with ids above `after_id`, finished no earlier than the horizon."""

    folder: Folder
    after_id: int
    last_id: int
    counts: dict[str, int]  # state -> files
    reasons: dict[str, int]  # failure reason -> failed files
    first_seen_at: float
    last_seen_at: float
    last_finished_at: float | None
    active_in_folder: bool  # any file of the folder not final (older ones too, e.g. retried)

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    @property
    def settled(self) -> bool:
        return not self.active_in_folder and not any(self.counts.get(state, 0) for state in ACTIVE)

    @property
    def last_activity(self) -> float:
        """The latest time a file of the drop was seen or finished."""
        return max(self.last_seen_at, self.last_finished_at or 0.0)


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed files finished within (since, until]."""

    count: int
    reasons: list[tuple[str, int]]  # most frequent first
    examples: list[tuple[str, str]]  # (path, reason), latest first


def folder_of(ledger: Ledger) -> ColumnElement[str]:
    """SQL for a row's folder name: the text of `path` before its first `/`, or ""."""
    if ledger.is_sqlite:
        slash = func.instr(File.path, "/")
        head = func.substr(File.path, 1, slash - 1)
    else:
        slash = func.strpos(File.path, "/")
        head = func.split_part(File.path, "/", 1)
    return case((slash > 0, head), else_=literal(""))


def finished_folders(ledger: Ledger, *, since: float, until: float) -> list[Folder]:
    """The folders with a file finished in (since, until] (on the finished_at index)."""
    name = folder_of(ledger)
    with ledger.read() as s:
        rows = s.execute(
            select(File.source_root, name)
            .where(File.finished_at > since, File.finished_at <= until)
            .distinct()
        ).all()
    return sorted(Folder(root, folder) for root, folder in rows)


def drop_of(ledger: Ledger, folder: Folder, *, after_id: int, horizon: float) -> Drop | None:
    """The drop of `folder`: its files with id > `after_id` not finished before `horizon`
    (None: no such file)."""
    in_folder = and_(File.source_root == folder.root, folder_of(ledger) == folder.name)
    recent = or_(File.finished_at.is_(None), File.finished_at >= horizon)
    with ledger.read() as s:
        per_state = s.execute(
            select(
                File.state,
                func.count(),
                func.max(File.id),
                func.min(File.seen_at),
                func.max(File.seen_at),
                func.max(File.finished_at),
            )
            .where(File.id > after_id, in_folder, recent)
            .group_by(File.state)
        ).all()
        if not per_state:
            return None
        reasons = s.execute(
            select(File.reason, func.count())
            .where(File.id > after_id, in_folder, recent, File.state == FileState.FAILED)
            .group_by(File.reason)
        ).all()
        active = s.scalar(select(File.id).where(File.state.in_(sorted(ACTIVE)), in_folder).limit(1))
    finished = [row[5] for row in per_state if row[5] is not None]
    return Drop(
        folder=folder,
        after_id=after_id,
        last_id=max(int(row[2]) for row in per_state),
        counts={str(row[0]): int(row[1]) for row in per_state},
        reasons={str(reason or "unknown"): int(n) for reason, n in reasons},
        first_seen_at=min(float(row[3]) for row in per_state),
        last_seen_at=max(float(row[4]) for row in per_state),
        last_finished_at=max(finished) if finished else None,
        active_in_folder=active is not None,
    )


def failures_between(
    ledger: Ledger, *, since: float, until: float, top: int, examples: int
) -> Failures:
    """Failed files finished in (since, until]: how many, the `top` reasons, a few paths."""
    window = and_(
        File.state == FileState.FAILED, File.finished_at > since, File.finished_at <= until
    )
    with ledger.read() as s:
        count = int(s.scalar(select(func.count()).where(window)) or 0)
        if not count:
            return Failures(0, [], [])
        n = func.count().label("n")
        reasons = s.execute(
            select(File.reason, n)
            .where(window)
            .group_by(File.reason)
            .order_by(n.desc(), File.reason)
            .limit(top)
        ).all()
        latest = s.execute(
            select(File.path, File.reason)
            .where(window)
            .order_by(File.finished_at.desc(), File.id.desc())
            .limit(examples)
        ).all()
    return Failures(
        count=count,
        reasons=[(reason or "unknown", int(k)) for reason, k in reasons],
        examples=[(path, reason or "unknown") for path, reason in latest],
    )
