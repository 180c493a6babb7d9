"""Opening the ledger: the engine, its SQLite tuning, migrations at start.

Connections are pooled per process; a forked child starts with an empty pool.

SQLite runs in WAL mode with a busy timeout; every write transaction starts
with `BEGIN IMMEDIATE`, so two processes never both read and then collide on
the upgrade to a write lock (which SQLite reports at once, without waiting).
Reads stay deferred and never block writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session, sessionmaker

from reka_ingest.core.constants import MIGRATION_LOCK_KEY, SQLITE_BUSY_TIMEOUT_MS
from reka_ingest.core.errors import (
    IngestError,
    LedgerMissing,
    LedgerUnavailable,
    LedgerUnreadable,
    SettingsError,
)
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import mask_url

if TYPE_CHECKING:
    from alembic.config import Config

log = get_logger(__name__)

# A long-running process that starts before its database waits this long at most
# between two tries (the first wait is half a second, doubled each time).
START_RETRY_MAX_WAIT = 30.0

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest migration's revision (tests hold it to the migrations folder's head):
# a ledger already there is opened without importing alembic at all, which every
# command, watcher and worker would otherwise pay for at start.
HEAD_REVISION = "0013_mask_url_credentials"
# Values in one `IN (...)` list: well under every backend's parameter limit.
IN_CHUNK = 500
# PostgreSQL's SQLSTATEs of a write that met a concurrent one: deadlock_detected,
# serialization_failure, lock_not_available (`Ledger.is_conflict`).
CONFLICT_SQLSTATES: Final = frozenset({"40P01", "40001", "55P03"})
_IMMEDIATE = "reka_ingest_immediate"


def _alembic_config(url: str) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - only when migrating (see HEAD_REVISION)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Every SQLite connection of the ledger's, as it opens (with its busy timeout).
SQLITE_PRAGMAS: Final = (
    "journal_mode=WAL",
    "synchronous=NORMAL",  # durable in WAL except on power loss
    "foreign_keys=ON",
    # Statement journals in memory, not in a temporary file: each row a count trigger
    # writes (migration 0005) otherwise costs some thirty pwrite(2)s to one, which made
    # an insert or a one-row update of `files` cost twice its CPU.
    "temp_store=MEMORY",
)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (Celery's prefork pool) never uses its parent's connections:
    each engine forgets them without closing them (the parent still does)."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Ledger:
    """A handle on the ledger database: sessions for reading and for writing."""

    def __init__(self, url: str, *, engine_options: dict[str, Any] | None = None) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        options: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # Pooled connections (SQLAlchemy's default for a file): closing a
            # process's last connection checkpoints the WAL into the database (with
            # an fsync), so one connection per checkout would do that after every
            # transaction. A forked child drops the inherited pool (see
            # _after_fork_in_child).
        else:
            options["pool_pre_ping"] = True
        options.update(engine_options or {})
        self.engine = create_engine(url, **options)
        _ENGINES.add(self.engine)
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._writer() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @staticmethod
    def is_outage(err: BaseException) -> bool:
        """Whether `err` says the database cannot work now (connection lost, locked
        past the busy timeout, disk full), not that one row's data is refused."""
        return isinstance(err, OperationalError | InterfaceError | LedgerUnavailable)

    @staticmethod
    def is_conflict(err: BaseException) -> bool:
        """Whether `err` is a write that met a concurrent one (PostgreSQL: a deadlock, a
        serialization failure, a lock not granted in time): an `is_outage` too, tried
        again the same way, but the ledger answers."""
        seen: BaseException | None = err
        while seen is not None:  # the driver's error, or what a LedgerUnavailable was raised from
            if getattr(getattr(seen, "orig", None), "sqlstate", None) in CONFLICT_SQLSTATES:
                return True
            seen = seen.__cause__
        return False

    @staticmethod
    def why_waiting(err: BaseException) -> str:
        """What a write that must wait (`is_outage`) met, as a person reads it."""
        if Ledger.is_conflict(err):
            return "a write met a concurrent one in the ledger (tried again)"
        return "the ledger does not answer"

    def reachable(self) -> bool:
        """Whether the database answers at all (tells an outage from one bad row)."""
        try:
            with self.read() as session:
                session.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure to answer is "not reachable"
            return False
        return True

    # --- migrations --------------------------------------------------------

    def current_revision(self) -> str | None:
        """The revision the ledger is at (None: never migrated), as alembic reads it."""
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - see HEAD_REVISION

        with self.engine.connect() as conn:
            rev: str | None = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
            return rev

    def _at_head(self) -> bool:
        """Whether the ledger is at HEAD_REVISION, read without alembic; False when
        it cannot tell (no version table yet), so alembic decides."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
                conn.rollback()
        except (OperationalError, ProgrammingError):  # no table yet: a new ledger
            return False
        return [r[0] for r in rows] == [HEAD_REVISION]

    @staticmethod
    def head_revision() -> str | None:
        from alembic.script import ScriptDirectory  # noqa: PLC0415 - see HEAD_REVISION

        head: str | None = ScriptDirectory.from_config(_alembic_config("")).get_current_head()
        return head

    def migrate(self) -> None:
        """Bring the schema to the newest revision; safe when many processes start at once."""
        if self._at_head():
            return
        from alembic import command  # noqa: PLC0415 - see HEAD_REVISION

        with self._migration_lock():
            if self.current_revision() != self.head_revision():
                with self.engine.begin() as conn:
                    cfg = _alembic_config(self.url)
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.is_sqlite:
            database = make_url(self.url).database
            if not database or database == ":memory:":
                yield
                return
            lock_path = Path(f"{database}.migrate.lock")
            with lock_path.open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        elif self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                try:
                    yield
                finally:
                    conn.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                    conn.commit()
        else:
            yield

    def dispose(self) -> None:
        self.engine.dispose()


def open_ledger(url: str, *, migrate: bool = True, create: bool = True) -> Ledger:
    """Open the ledger at `url`, applying migrations unless told not to.

    `create=False` is for commands that read a deployment (`files`, `status`, ...):
    a SQLite ledger that does not exist raises `LedgerMissing` instead of being made,
    so such a command run from the wrong folder says so, and leaves nothing behind."""
    if not create:
        _require_sqlite_file(url)
    try:
        ledger = Ledger(url)
    except Exception as err:
        raise SettingsError(f"INGEST_DATABASE_URL: cannot open the ledger: {err}") from err
    if migrate:
        try:
            ledger.migrate()
        except Exception as err:
            ledger.dispose()
            failure = ledger_failure(url, err)
            if failure is None:
                raise
            raise failure from err
    return ledger


def unavailable(url: str, err: BaseException) -> LedgerUnavailable:
    """The ledger's outage as a person reads it: which ledger (its URL, any password
    masked) and the database driver's own words, on one line."""
    if isinstance(err, LedgerUnavailable):
        return err
    return LedgerUnavailable(f"the ledger at {mask_url(url)} does not answer: {_words(err)}")


def ledger_failure(url: str, err: BaseException) -> IngestError | None:
    """`err` as a person should read it when the ledger itself failed: an outage
    (`unavailable`), or a database that answers but is no usable ledger (a damaged
    file: `LedgerUnreadable`); None for anything else, a fault in the program (a
    refused statement, a constraint) among them."""
    if Ledger.is_outage(err):
        return unavailable(url, err)
    if isinstance(err, DatabaseError) and not isinstance(
        err, IntegrityError | ProgrammingError | DataError
    ):
        return LedgerUnreadable(f"the ledger at {mask_url(url)} cannot be used: {_words(err)}")
    return None


def _words(err: BaseException) -> str:
    """The driver's message (not SQLAlchemy's wrapping of it), on one line."""
    cause = getattr(err, "orig", None) or err
    words = " ".join(line.strip() for line in str(cause).splitlines() if line.strip())
    return words or type(cause).__name__


def _require_sqlite_file(url: str) -> None:
    """Raise `LedgerMissing` when `url` names a SQLite file that is not there (a server's
    database is not checked here: connecting to it says whether it exists)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a wrong URL is open_ledger's to report
        return
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if not os.path.exists(database):
        raise LedgerMissing(
            f"no ledger at {database}: nothing has run with this INGEST_DATA_DIR yet. "
            "`reka-ingest run` makes it; to read another deployment, set INGEST_DATA_DIR "
            "(or INGEST_DATABASE_URL) to its folder, or run the command from the folder "
            "`reka-ingest run` was started in"
        )


def open_ledger_waiting(url: str, *, sleep: Callable[[float], None] = time.sleep) -> Ledger:
    """`open_ledger` for a long-running process (the watcher): a database that is
    not up yet (compose starting everything at once, a PostgreSQL restart) is
    waited for, with backoff and a log line per try; a wrong URL or any error
    that is not an outage is raised at once."""
    ledger = open_ledger(url, migrate=False)
    wait, tries = 0.5, 0
    while True:
        tries += 1
        try:
            ledger.migrate()
        except Exception as err:
            if not ledger.is_outage(err):
                ledger.dispose()
                raise
            first_line = (str(err).splitlines() or [type(err).__name__])[0]
            log.warning("ledger_unavailable_at_start", attempt=tries, wait=wait, error=first_line)
            sleep(wait)
            wait = min(wait * 2, START_RETRY_MAX_WAIT)
            continue
        if tries > 1:
            log.info("ledger_available", attempts=tries)
        return ledger
