"""What the web page shows, read from the ledger and Redis as `status` reads them.

Every query is bounded: counts by state and the oldest waiting file are
`status`'s own (`reka_ingest.ledger.queries.summary`); the trend reads the
`finished_at` index over the last half hour, the files seen lately one probe
per state on (state, seen_at); failures by reason read the failed rows only;
the latest rows walk `finished_at` backwards with a limit; and per-folder
progress groups the most recent FOLDER_WINDOW rows by id (a primary-key range),
never the whole table. Nothing here writes.

Reading is split from drawing: `read_page` returns a `Page`, the template draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import redis
from sqlalchemy import ColumnElement, Executable, Integer, case, cast, func, select
from sqlalchemy.orm import Session

from reka_ingest.core.states import ACTIVE, RETRIABLE_BY_REASON, TERMINAL, FileState, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import summary
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.budget import BudgetView, budget_words, duration, read_budget
from scheduler.requeue import NOT_RETRIABLE

TREND_MINUTES = 30  # the sparkline: finished files per minute over this many minutes
TREND_WINDOWS = (1, 5, 15)  # minutes: "seen / finished in the last N minutes"
RATE_WINDOW = 60.0  # seconds of finished files the current rate is measured over
FOLDER_WINDOW = 20_000  # per-folder progress covers the most recent rows by id
FOLDERS_SHOWN = 25
LATEST_FAILURES = 12
LATEST_FILES = 12
ROOT_FOLDER = ""  # files dropped straight into the inbox
# States whose rows `reka-ingest retry --reason STATE` sends again (their images are gone).
RETRY_STATES = (FileState.FAILED, *sorted(RETRIABLE_BY_REASON))


@dataclass(frozen=True, slots=True)
class Row:
    """One file on the page: a failure or a recent outcome."""

    id: int
    path: str
    state: str
    reason: str | None
    message: str | None
    image_url: str | None  # only http(s) URLs; anything else is dropped
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class Folder:
    name: str  # the top-level folder of `path`; ROOT_FOLDER for the inbox itself
    counts: dict[str, int]
    last_id: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(n for state, n in self.counts.items() if state in TERMINAL)

    @property
    def failed(self) -> int:
        return self.counts.get(FileState.FAILED.value, 0)


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """Files in a retriable state for one reason, and whether `retry` can take them."""

    state: str
    reason: str  # what `retry --reason` takes: the reason, or the state for expired/deleted
    count: int
    hint: str | None  # why the button is absent (not retriable), else None

    @property
    def retriable(self) -> bool:
        return self.hint is None


@dataclass(frozen=True, slots=True)
class Window:
    minutes: int
    seen: int
    finished: dict[str, int]  # state -> files that reached it in the window

    @property
    def finished_total(self) -> int:
        return sum(self.finished.values())


@dataclass(frozen=True, slots=True)
class QuotaEta:
    """Time to send what is left at the daily request budget, not only at today's rate."""

    to_send: int  # files not yet sent (queued)
    requests: int  # upload requests they need, batches full
    seconds: float | None  # None: unknown
    words: str


@dataclass(frozen=True, slots=True)
class Page:
    at: float
    files: dict[str, int]
    total: int
    oldest_waiting_path: str | None
    oldest_waiting_age: float | None
    finished_last_minute: int
    overall_per_second: float | None
    windows: list[Window]
    per_minute: list[int]  # finished per minute, oldest first, TREND_MINUTES long
    failed_per_minute: list[int]
    budget: BudgetView
    quota: QuotaEta
    folders: list[Folder]
    folder_window: int  # how many of the most recent rows the folders cover
    reasons: list[ReasonCount]
    failures: list[Row]
    latest: list[Row]
    batch_size: int
    states: list[str] = field(default_factory=lambda: [s.value for s in FileState])

    @property
    def active(self) -> int:
        return sum(self.files.get(s.value, 0) for s in ACTIVE)

    @property
    def per_second(self) -> float:
        return self.finished_last_minute / RATE_WINDOW

    @property
    def seconds_left_at_rate(self) -> float | None:
        """The active files at the last minute's rate (as `status --watch`); None: no rate."""
        if self.active == 0:
            return 0.0
        return self.active / self.per_second if self.per_second > 0 else None

    @property
    def budget_text(self) -> str:
        return budget_words(self.budget, self.at)


def quota_eta(
    to_send: int,
    *,
    batch_size: int,
    budget: BudgetView,
    now: float,
    at_rate: float | None,
) -> QuotaEta:
    """How long `to_send` files take at the shared daily budget.

    They need ceil(to_send / batch_size) requests (batches full: the best case).
    Those the budget still has go now; each one beyond waits for a slot to free:
    the first at `refills_at`, then `limit` more every window (the rolling 24 h),
    so about window / limit apart. The answer is never shorter than the time at
    the current rate (`at_rate`), since the budget is a ceiling, not a speed.
    """
    requests = math.ceil(to_send / batch_size) if to_send else 0
    if requests == 0:
        return QuotaEta(0, 0, 0.0, "nothing left to send")
    need = f"{to_send} file(s) to send need {requests} request(s) of up to {batch_size}"
    if not budget.known:
        return QuotaEta(to_send, requests, None, f"{need}; budget {budget_words(budget, now)}")
    start = max(0.0, (budget.paused_until or now) - now)
    if budget.limit is None or budget.remaining is None:
        seconds = None if at_rate is None else start + at_rate
        return QuotaEta(
            to_send,
            requests,
            seconds,
            f"{need}; no daily limit, so the current rate decides: {duration(seconds)}",
        )
    if requests <= budget.remaining:
        seconds = None if at_rate is None else start + at_rate
        return QuotaEta(
            to_send,
            requests,
            seconds,
            f"{need}; today's budget covers them ({budget.remaining} of {budget.limit} left)"
            f", so the current rate decides: {duration(seconds)}",
        )
    extra = requests - budget.remaining
    first = max(0.0, budget.refills_at - now) if budget.refills_at is not None else 0.0
    seconds = max(start, first) + (extra - 1) * budget.window / budget.limit
    if at_rate is not None:
        seconds = max(seconds, at_rate)
    return QuotaEta(
        to_send,
        requests,
        seconds,
        f"{need}; {budget.remaining} of {budget.limit} left today, {extra} must wait for"
        f" the budget to refill ({budget.limit} a day): about {duration(seconds)}",
    )


def safe_url(url: str | None) -> str | None:
    """`url` when it is an http(s) URL with a host; never a `javascript:` or `data:` link."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _folder_of(session: Session) -> ColumnElement[str]:
    """The top-level folder of `path` in SQL (ROOT_FOLDER when there is none)."""
    if session.get_bind().dialect.name == "postgresql":
        slash = func.strpos(File.path, "/")
        head: ColumnElement[str] = func.split_part(File.path, "/", 1)
    else:
        slash = func.instr(File.path, "/")
        head = func.substr(File.path, 1, slash - 1)
    return case((slash > 1, head), else_=ROOT_FOLDER)


def _minute_of(session: Session, start: float) -> ColumnElement[int]:
    """Whole minutes from `start` to `finished_at` (never negative in the queries here)."""
    offset = (File.finished_at - start) / 60
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(offset), Integer)  # a cast alone rounds on PostgreSQL
    return cast(offset, Integer)  # truncates: the floor of a non-negative number


def _rows(session: Session, query: Executable) -> list[Row]:
    return [
        Row(r.id, r.path, r.state, r.reason, r.message, safe_url(r.image_url), r.finished_at)
        for r in session.execute(query).all()
    ]


_ROW_COLUMNS = (
    File.id,
    File.path,
    File.state,
    File.reason,
    File.message,
    File.image_url,
    File.finished_at,
)


def _trend(session: Session, now: float) -> tuple[list[Window], list[int], list[int]]:
    start = now - TREND_MINUTES * 60
    minute = _minute_of(session, start).label("minute")
    rows = session.execute(
        select(minute, File.state, func.count())
        .where(File.finished_at.is_not(None), File.finished_at >= start)
        .group_by(minute, File.state)
    ).all()
    per_minute = [0] * TREND_MINUTES
    failed = [0] * TREND_MINUTES
    by_minute_state: dict[tuple[int, str], int] = {}
    for minute_of, state, n in rows:
        m = min(max(int(minute_of), 0), TREND_MINUTES - 1)
        per_minute[m] += n
        if state == FileState.FAILED:
            failed[m] += n
        by_minute_state[(m, str(state))] = by_minute_state.get((m, str(state)), 0) + n
    windows = []
    for minutes in TREND_WINDOWS:
        since = now - minutes * 60
        seen = sum(
            session.scalar(select(func.count()).where(File.state == state, File.seen_at >= since))
            or 0
            for state in FileState
        )
        first = TREND_MINUTES - minutes
        finished: dict[str, int] = {}
        for (m, state), n in by_minute_state.items():
            if m >= first:
                finished[state] = finished.get(state, 0) + n
        windows.append(Window(minutes, seen, finished))
    return windows, per_minute, failed


def _folders(session: Session) -> list[Folder]:
    last = session.scalar(select(func.max(File.id)))
    if last is None:
        return []
    folder = _folder_of(session).label("folder")
    rows = session.execute(
        select(folder, File.state, func.count(), func.max(File.id))
        .where(File.id > last - FOLDER_WINDOW)
        .group_by(folder, File.state)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    latest: dict[str, int] = {}
    for name, state, n, top in rows:
        counts.setdefault(name, {})[str(state)] = int(n)
        latest[name] = max(latest.get(name, 0), int(top))
    ordered = sorted(counts, key=lambda name: latest[name], reverse=True)[:FOLDERS_SHOWN]
    return [Folder(name, counts[name], latest[name]) for name in ordered]


def _reasons(session: Session) -> list[ReasonCount]:
    rows = session.execute(
        select(File.state, File.reason, func.count())
        .where(File.state.in_([s.value for s in RETRY_STATES]))
        .group_by(File.state, File.reason)
    ).all()
    out: dict[tuple[str, str], int] = {}
    for state, reason, n in rows:
        # `retry --reason expired` (or deleted) names the state; a failed row, its reason.
        name = str(state) if state != FileState.FAILED else str(reason or "")
        out[(str(state), name)] = out.get((str(state), name), 0) + int(n)
    result = []
    for (state, name), n in sorted(out.items(), key=lambda kv: (-kv[1], kv[0])):
        if name in NOT_RETRIABLE:
            hint: str | None = NOT_RETRIABLE[Reason(name)]
        elif name not in Reason.__members__.values():
            hint = "no reason recorded: `reka-ingest retry` without --reason takes these"
        else:
            hint = None
        result.append(ReasonCount(state, name, n, hint))
    return result


def read_page(
    ledger: Ledger,
    client: redis.Redis[bytes] | None,
    *,
    now: float,
    batch_size: int,
) -> Page:
    """Everything the page shows, at `now`; Redis may be down (the budget says so)."""
    s = summary(ledger, now=now)
    with ledger.read() as session:
        windows, per_minute, failed_per_minute = _trend(session, now)
        folders = _folders(session)
        reasons = _reasons(session)
        failures = _rows(
            session,
            select(*_ROW_COLUMNS)
            .where(File.state == FileState.FAILED)
            .order_by(File.finished_at.desc(), File.id.desc())
            .limit(LATEST_FAILURES),
        )
        latest = _rows(
            session,
            select(*_ROW_COLUMNS)
            .where(File.finished_at.is_not(None))
            .order_by(File.finished_at.desc())
            .limit(LATEST_FILES),
        )
    budget = (
        read_budget(client, now=now)
        if client is not None
        else BudgetView(known=False, error="no Redis configured")
    )
    done = s.total - sum(s.files[state.value] for state in ACTIVE)
    elapsed = (
        s.last_finished_at - s.first_seen_at
        if s.first_seen_at is not None and s.last_finished_at is not None
        else None
    )
    page = Page(
        at=now,
        files=s.files,
        total=s.total,
        oldest_waiting_path=s.oldest_waiting_path,
        oldest_waiting_age=now - s.oldest_waiting_seen_at
        if s.oldest_waiting_seen_at is not None
        else None,
        finished_last_minute=s.finished_last_minute,
        overall_per_second=done / elapsed if elapsed else None,
        windows=windows,
        per_minute=per_minute,
        failed_per_minute=failed_per_minute,
        budget=budget,
        quota=QuotaEta(0, 0, None, ""),
        folders=folders,
        folder_window=FOLDER_WINDOW,
        reasons=reasons,
        failures=failures,
        latest=latest,
        batch_size=batch_size,
    )
    quota = quota_eta(
        s.files[FileState.QUEUED.value],
        batch_size=batch_size,
        budget=budget,
        now=now,
        at_rate=page.seconds_left_at_rate,
    )
    return replace(page, quota=quota)


def sparkline(values: Sequence[int], *, width: int = 300, height: int = 40) -> str:
    """SVG polyline points for `values` (oldest first), scaled to the box."""
    if not values:
        return ""
    top = max(*values, 1)
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}" for i, v in enumerate(values)
    )
