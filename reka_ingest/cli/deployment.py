"""Which deployment a command in another shell reads, and saying so.

`reka-ingest run` records where its parts live in `<data dir>/run.json`
(reka_ingest.cli.pid_file). Before a reading command runs (`status`, `files`,
`retry`, `metrics`, `check`, ...), `adopt` looks for that record in the data
folder this shell names (INGEST_DATA_DIR, or the default `./var`):

- a live record (its `run` still running): the recorded Redis URL, stand-in
  URL (with the stand-in's documented key), database URL, inbox and budget
  settings become this process's defaults. A variable set in this shell always
  wins; nothing is taken that carried a password (the record holds none).
- a stale record (its `run` is gone) or none: nothing is taken.

Either way the command says on stderr (stdout stays clean for --json and
--csv) which deployment it reads, e.g. `reading the deployment run from
/abs/var (pid 1234, started 20:51)` or `no running deployment recorded in
/abs/var; reading redis://127.0.0.1:6390/0`.

`run` also writes a marker into the Redis it uses (`DEPLOYMENT_KEY`);
`redis_warning` reads it, so a command pointed at a Redis that no run of this
data folder uses (another program's server on the port) says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reka_ingest.cli.pid_file import RunRecord, read_run_record
from reka_ingest.core.constants import (
    BUDGET_KEY,
    DEPLOYMENT_KEY,
    REDIS_TIMEOUT,
    STANDIN_DEV_API_KEY,
)
from reka_ingest.core.settings import IngestSettings, mask_url

if TYPE_CHECKING:
    import redis

# Recorded part -> the variables that, set in this shell, keep it from being taken.
_TAKEN: dict[str, tuple[str, tuple[str, ...]]] = {
    "redis_url": ("INGEST_REDIS_URL", ("INGEST_REDIS_URL", "INGEST_BUNDLED_REDIS_PORT")),
    "database_url": ("INGEST_DATABASE_URL", ("INGEST_DATABASE_URL",)),
    "inbox": ("INGEST_INBOX", ("INGEST_INBOX",)),
    "uploads_per_day": ("INGEST_UPLOADS_PER_DAY", ("INGEST_UPLOADS_PER_DAY",)),
    "uploads_per_second": ("INGEST_UPLOADS_PER_SECOND", ("INGEST_UPLOADS_PER_SECOND",)),
}


@dataclass(frozen=True, slots=True)
class Reading:
    """What a command reads: the data folder, the run recorded there (if any)."""

    data_dir: Path
    record: RunRecord | None
    live: bool
    taken: tuple[str, ...]  # the variables taken from the record

    def line(self, redis_url: str) -> str:
        """One line naming the deployment read (shown on stderr)."""
        if self.record is not None and self.live:
            return (
                f"reading the deployment run from {self.data_dir} "
                f"(pid {self.record.owner.pid}, started {_clock(self.record.started_at)})"
            )
        if self.record is not None:
            return (
                f"the deployment recorded in {self.data_dir} is not running (pid "
                f"{self.record.owner.pid} is gone; stale record from "
                f"{_clock(self.record.started_at)}); reading {mask_url(redis_url)}"
            )
        return f"no running deployment recorded in {self.data_dir}; reading {mask_url(redis_url)}"

    def as_json(self) -> dict[str, object]:
        return {
            "data_dir": str(self.data_dir),
            "run_pid": None if self.record is None else self.record.owner.pid,
            "started_at": None if self.record is None else self.record.started_at,
            "live": self.live,
            "stale": self.record is not None and not self.live,
            "taken_from_record": list(self.taken),
        }


def data_dir_of(environ: MutableMapping[str, str]) -> Path:
    """The data folder this shell names: INGEST_DATA_DIR, or the default."""
    default = IngestSettings.model_fields["data_dir"].default
    return Path(environ.get("INGEST_DATA_DIR") or default).resolve()


def adopt(environ: MutableMapping[str, str]) -> Reading:
    """Find the run recorded in this shell's data folder; take its parts as defaults."""
    data_dir = data_dir_of(environ)
    record = read_run_record(data_dir)
    live = record is not None and record.live
    taken: list[str] = []
    if record is not None and live:
        parts = record.deployment
        for part, (variable, blockers) in _TAKEN.items():
            value = parts.get(part)
            if value is None or any(environ.get(b) for b in blockers):
                continue
            if part.endswith("_url") and urlsplit(str(value)).password:
                continue  # never recorded with one; never taken with one either
            environ[variable] = str(value)
            taken.append(variable)
        standin = parts.get("standin_url")
        if standin and not environ.get("REKA_API_KEY") and not environ.get("REKA_API_BASE_URL"):
            # The stand-in's documented key is no secret; it listens on loopback only.
            environ["REKA_API_BASE_URL"] = str(standin)
            environ["REKA_API_KEY"] = STANDIN_DEV_API_KEY
            taken.append("REKA_API_BASE_URL")
    return Reading(data_dir, record, live, tuple(taken))


def mark_redis(client: redis.Redis[bytes], data_dir: Path, *, pid: int, started_at: float) -> None:
    """`run`: say in its Redis which deployment uses it."""
    client.hset(
        DEPLOYMENT_KEY,
        mapping={"data_dir": str(data_dir), "pid": pid, "started_at": repr(started_at)},
    )


def redis_warning(redis_url: str, reading: Reading) -> str | None:
    """Why the Redis at `redis_url` may not be this deployment's; None when it is (or
    when Redis does not answer: the command itself says so)."""
    import redis  # noqa: PLC0415 - only commands that check Redis load its client

    client: redis.Redis[bytes] = redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        marker = {
            k.decode(): v.decode(errors="replace")
            for k, v in client.hgetall(DEPLOYMENT_KEY).items()
        }
        published = bool(client.exists(BUDGET_KEY))
    except redis.RedisError:
        return None
    finally:
        client.close()
    shown = mask_url(redis_url)
    if not marker:
        if published:
            return None  # workers use it, started by something else than `run` (compose, k8s)
        return (
            f"warning: the Redis at {shown} holds no reka-ingest deployment marker: it may be "
            f"another program's server; set INGEST_DATA_DIR (or INGEST_REDIS_URL) to the "
            "deployment you mean"
        )
    if Path(marker.get("data_dir", "")) != reading.data_dir:
        return (
            f"warning: the Redis at {shown} is used by the deployment run from "
            f"{marker.get('data_dir')} (pid {marker.get('pid')}), not by {reading.data_dir}"
        )
    return None


def reading_of(ctx: object) -> Reading:
    """The reading the entry point made (typer's context object), or a fresh look
    (a command called without the entry point's callback)."""
    obj = getattr(ctx, "obj", None)
    if isinstance(obj, Reading):
        return obj
    return adopt(os.environ)


def announce(reading: Reading, redis_url: str, *, check_redis: bool = True) -> list[str]:
    """The lines a command shows first: which deployment, and any doubt about its Redis."""
    lines = [reading.line(redis_url)]
    if check_redis:
        warning = redis_warning(redis_url, reading)
        if warning is not None:
            lines.append(warning)
    return lines


def _clock(at: float | None) -> str:
    if at is None:
        return "at an unknown time"
    today = time.strftime("%Y-%m-%d") == time.strftime("%Y-%m-%d", time.localtime(at))
    return time.strftime("%H:%M" if today else "%Y-%m-%d %H:%M", time.localtime(at))
