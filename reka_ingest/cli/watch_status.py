"""`reka-ingest status --watch`: a live view of the ledger, refreshed every
second: a bar per state, throughput, time to finish, queue depth, the shared
API budget (the one reading and wording every view shares:
reka_ingest.metrics.budget), the last server check's findings and the latest
failures, under a line saying which deployment it reads. Ctrl-C leaves it
cleanly; `--once` draws it once and exits (for scripts, logs and tests).

Reading is split from drawing: `take_snapshot` reads the ledger and Redis,
`render` turns a snapshot into a rich renderable, so both are tested alone.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from reka_ingest.core.queues import QUEUES
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import ACTIVE, FileState
from reka_ingest.core.text import printable
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import summary
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.budget import BudgetView, budget_words, duration, read_budget
from reka_ingest.metrics.collector import queue_depth
from reka_ingest.metrics.counters import redis_client
from reka_ingest.metrics.server_check import ServerCheck, describe, read_server_check

REFRESH_SECONDS = 1.0
LATEST_FAILURES = 8
RATE_WINDOW = 60.0  # seconds of finished files the throughput is measured over
STATE_STYLES = {
    FileState.QUEUED: "cyan",
    FileState.UPLOADING: "blue",
    FileState.INDEXING: "magenta",
    FileState.INDEXED: "green",
    FileState.STORED: "green",
    FileState.DUPLICATE: "yellow",
    FileState.FAILED: "red",
    FileState.EXPIRED: "bright_black",
    FileState.DELETED: "bright_black",
    FileState.EXCLUDED: "dim",
    FileState.SUPERSEDED: "bright_black",
}


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    reason: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    files: dict[str, int]
    total: int
    finished_last_minute: int
    oldest_active_age: float | None
    queues: dict[str, int] | None  # None: Redis did not answer
    budget: BudgetView
    failures: list[Failure] = field(default_factory=list)
    # The last server check (reka_ingest.metrics.server_check); `server_check_read`
    # False: Redis did not answer, so whether one ran is unknown.
    server_check: ServerCheck | None = None
    server_check_read: bool = False
    header: tuple[str, ...] = ()  # which deployment is read, and any doubt about its Redis

    @property
    def active(self) -> int:
        return sum(self.files[s.value] for s in ACTIVE)

    @property
    def per_second(self) -> float:
        return self.finished_last_minute / RATE_WINDOW

    @property
    def seconds_left(self) -> float | None:
        """Time to finish the active files at the current rate; None when unknown."""
        if self.active == 0:
            return 0.0
        rate = self.per_second
        return self.active / rate if rate > 0 else None


def take_snapshot(
    ledger: Ledger,
    client: redis.Redis[bytes] | None,
    *,
    now: float,
    header: tuple[str, ...] = (),
) -> Snapshot:
    s = summary(ledger, now=now)
    with ledger.read() as session:
        rows = session.execute(
            select(File.path, File.reason, File.message)
            .where(File.state == FileState.FAILED)
            .order_by(File.finished_at.desc(), File.id.desc())
            .limit(LATEST_FAILURES)
        ).all()
    queues: dict[str, int] | None = None
    budget = BudgetView(known=False, error="Redis did not answer")
    check: ServerCheck | None = None
    check_read = False
    if client is not None:
        budget = read_budget(client, now=now)
        try:
            queues = {q: queue_depth(client, q) for q in QUEUES}
            check, check_read = read_server_check(client), True
        except redis.RedisError:
            queues, check, check_read = None, None, False
    return Snapshot(
        at=now,
        files=s.files,
        total=s.total,
        finished_last_minute=s.finished_last_minute,
        oldest_active_age=now - s.oldest_waiting_seen_at
        if s.oldest_waiting_seen_at is not None
        else None,
        queues=queues,
        budget=budget,
        failures=[Failure(p, r, m) for p, r, m in rows],
        server_check=check,
        server_check_read=check_read,
        header=header,
    )


def _plain(text: str) -> Text:
    """Foreign text (a name, a message, a server's error) as a cell: never read as rich
    markup (`a[/]b.jpg` would stop the view), and one line (`printable`)."""
    return Text(printable(text))


def render(snap: Snapshot) -> RenderableType:
    states = Table.grid(padding=(0, 2))
    states.add_column(justify="left", no_wrap=True)
    states.add_column(justify="right", no_wrap=True)
    states.add_column(ratio=1)
    for state in FileState:
        count = snap.files.get(state.value, 0)
        style = STATE_STYLES[state]
        bar = ProgressBar(total=max(snap.total, 1), completed=count, width=40, complete_style=style)
        states.add_row(Text(state.value, style=style), str(count), bar)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    excluded = snap.files.get(FileState.EXCLUDED.value, 0)
    left_out = f", {excluded} excluded by INGEST_INCLUDE/EXCLUDE" if excluded else ""
    facts.add_row("files", f"{snap.total} ({snap.active} not final{left_out})")
    facts.add_row(
        "throughput",
        f"{snap.per_second:.2f} files/s ({snap.finished_last_minute} in the last minute)",
    )
    facts.add_row("time to finish", duration(snap.seconds_left))
    facts.add_row(
        "oldest waiting",
        "none" if snap.oldest_active_age is None else duration(snap.oldest_active_age),
    )
    if snap.queues is None:
        facts.add_row("queues", Text("Redis did not answer", style="red"))
    else:
        facts.add_row("queues", "  ".join(f"{q} {n}" for q, n in snap.queues.items()))
    facts.add_row("API budget", _plain(budget_words(snap.budget, snap.at)))
    if snap.server_check_read:
        facts.add_row("server check", _plain(describe(snap.server_check, snap.at)))
    else:
        facts.add_row("server check", Text("unknown (Redis did not answer)", style="red"))

    failures = Table(title="latest failures", expand=True, title_justify="left")
    failures.add_column("path", overflow="fold", ratio=2)
    failures.add_column("reason", no_wrap=True)
    failures.add_column("message", overflow="fold", ratio=3)
    for f in snap.failures:
        failures.add_row(_plain(f.path), _plain(f.reason or ""), _plain(f.message or ""))
    if not snap.failures:
        failures.add_row("none", "", "")

    stamp = time.strftime("%H:%M:%S", time.localtime(snap.at))
    header = [Text(line, style="yellow" if n else "dim") for n, line in enumerate(snap.header)]
    return Panel(
        Group(
            *header, *([Text("")] if header else []), states, Text(""), facts, Text(""), failures
        ),
        title=f"reka-ingest status  {stamp}",
        subtitle="Ctrl-C to exit",
    )


def watch(
    settings: Settings,
    *,
    console: Console | None = None,
    refresh: float = REFRESH_SECONDS,
    clock: Callable[[], float] = time.time,
    header: list[str] | None = None,
    once: bool = False,
) -> None:
    """Draw the live view until Ctrl-C (or SIGTERM); `once`: draw it once and return.

    The signal only sets an event: a KeyboardInterrupt raised at an arbitrary
    point could land inside Rich's or the connection pool's lock and leave it
    held, hanging the exit.
    """
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    ledger = open_ledger(settings.ingest.ledger_url, migrate=False, create=False)
    client = redis_client(settings.ingest.broker_url)
    lines = tuple(header or ())
    try:
        if once:
            (console or Console()).print(
                render(take_snapshot(ledger, client, now=clock(), header=lines))
            )
            return
        with Live(
            render(take_snapshot(ledger, client, now=clock(), header=lines)),
            console=console,
            refresh_per_second=4,
            screen=False,
            transient=False,
        ) as live:
            while not stop.wait(refresh):
                live.update(render(take_snapshot(ledger, client, now=clock(), header=lines)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        client.close()
        ledger.dispose()
