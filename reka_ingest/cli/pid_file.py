"""The run record of `reka-ingest run`: what it started and where its parts
live, so the next `run` can end whatever an earlier one left behind, and every
command in another shell finds the deployment (reka_ingest.cli.deployment).

`<data dir>/run.json` names the `run` process itself (the owner) and each
child it started: name, pid, start time and argv; its `deployment` part says
where the parts answer (the Redis URL without its password, the stand-in's
URL, Flower's, the ports, the data folder, when it started). It is written
atomically (a reader sees the old file or the new one), removed at a clean
stop, and a record whose owner is gone (killed) is stale: `RunRecord.live`.

The start time (field 22 of `/proc/PID/stat`, clock ticks after boot) and the
boot id make a process's identity: a pid the kernel has since given to another
process never matches, so nothing but our own leftovers is ever signalled, and
never by name.

At start, `PidFile.claim()` reads the file an earlier `run` left:
- its owner still alive: another `run` uses this data folder; refuse (SettingsError);
- each child still alive and still the same process: SIGTERM (and SIGCONT, in
  case it was stopped), SIGKILL after `LEFTOVER_STOP_TIMEOUT`;
then it writes a fresh file naming this process. The parent-death signal
(reka_ingest.core.parent_death) normally ends children with their `run`; this file is
the net for what that misses (a child that hangs in its shutdown, a system
without the signal). Without /proc nothing can be proven ours and nothing is
signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.logs import get_logger

log = get_logger(__name__)

PID_FILE_NAME = "run.json"
LEFTOVER_STOP_TIMEOUT = 10.0  # seconds from SIGTERM to SIGKILL
KILL_WAIT = 5.0  # seconds a SIGKILLed process gets to disappear
_POLL = 0.05
_STARTTIME_FIELD = 19  # index of `starttime` after the ")" that ends the command name
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # exited, waiting for its parent to reap it: gone for us
        return None
    return int(fields[_STARTTIME_FIELD])


def boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Mark:
    """One process as recorded: enough to know it again, and only it."""

    name: str
    pid: int
    start: int | None
    argv: list[str]

    @classmethod
    def of(cls, name: str, pid: int, argv: list[str]) -> Mark:
        return cls(name, pid, start_time(pid), argv)

    def alive(self) -> bool:
        """Still running, and still the very process recorded (not a reused pid)."""
        return self.start is not None and start_time(self.pid) == self.start


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run record as read back: who ran, since when, and where its parts live."""

    path: Path
    owner: Mark
    started_at: float | None
    deployment: dict[str, Any]
    same_boot: bool

    @property
    def live(self) -> bool:
        """Its `run` is still running (the very process recorded); else the record is stale."""
        return self.same_boot and self.owner.alive()


def read_run_record(data_dir: Path) -> RunRecord | None:
    """The run record in `data_dir`; None when there is none or it cannot be read."""
    path = data_dir / PID_FILE_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        deployment = data.get("deployment") or {}
        started = data.get("started_at")
        return RunRecord(
            path=path,
            owner=_mark(data["owner"]),
            started_at=None if started is None else float(started),
            deployment=dict(deployment) if isinstance(deployment, dict) else {},
            same_boot=data.get("boot_id") == boot_id(),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class PidFile:
    """`run.json` in the data folder: written on every start, read by the next run
    and by every command in another shell."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_FILE_NAME
        self.data_dir = data_dir
        self._owner = Mark.of("run", os.getpid(), list(sys.argv))
        self._children: list[Mark] = []
        self.started_at = time.time()
        self._deployment: dict[str, Any] = {}

    def claim(self, timeout: float = LEFTOVER_STOP_TIMEOUT) -> list[Mark]:
        """End the previous run's leftover children, then record this run; returns those ended."""
        owner, children = self._read()
        if owner is not None and owner.alive() and owner.pid != os.getpid():
            raise SettingsError(
                f"INGEST_DATA_DIR: another `reka-ingest run` (pid {owner.pid}) is using "
                f"{self.data_dir}; stop it first, or give this one another data folder"
            )
        leftovers = [c for c in children if c.alive()]
        if leftovers:
            log.warning(
                "run_leftovers_found",
                processes=[f"{c.name} (pid {c.pid})" for c in leftovers],
                pid_file=str(self.path),
            )
            end_processes(leftovers, timeout)
        self._write()
        return leftovers

    def add(self, name: str, pid: int, argv: list[str]) -> None:
        """Record a child just started (the file is rewritten at once: a kill may come next)."""
        self._children.append(Mark.of(name, pid, argv))
        self._write()

    def describe(self, **deployment: Any) -> None:
        """Record where the parts live (values must be JSON; never a password)."""
        self._deployment.update(deployment)
        self._write()

    def remove(self) -> None:
        """After an orderly stop: nothing of ours is left to find."""
        self._children.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _write(self) -> None:
        data = {
            "boot_id": boot_id(),
            "data_dir": str(self.data_dir),
            "started_at": self.started_at,
            "owner": asdict(self._owner),
            "children": [asdict(c) for c in self._children],
            "deployment": self._deployment,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path)  # a reader sees the old file or the new one, never half

    def _read(self) -> tuple[Mark | None, list[Mark]]:
        """The earlier run's owner and children; nothing when the file is absent,
        unreadable, or from before the last boot (every pid in it is someone else's)."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            if data.get("boot_id") != boot_id():
                return None, []
            owner = _mark(data["owner"])
            return owner, [_mark(c) for c in data["children"]]
        except FileNotFoundError:
            return None, []
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("run_pid_file_unreadable", path=str(self.path), error=str(err))
            return None, []


def _mark(raw: dict[str, Any]) -> Mark:
    start = raw["start"]
    return Mark(
        name=str(raw["name"]),
        pid=int(raw["pid"]),
        start=None if start is None else int(start),
        argv=[str(a) for a in raw["argv"]],
    )


def end_processes(marks: list[Mark], timeout: float) -> None:
    """SIGTERM each (SIGCONT too, so a stopped one handles it), SIGKILL what outlives `timeout`."""
    for mark in marks:
        _signal(mark, signal.SIGTERM)
        _signal(mark, signal.SIGCONT)
    left = _wait_gone(marks, timeout)
    for mark in left:
        log.warning("run_leftover_killed", name=mark.name, pid=mark.pid)
        _signal(mark, signal.SIGKILL)
    left = _wait_gone(left, KILL_WAIT)
    for mark in marks:
        if mark not in left:
            log.info("run_leftover_ended", name=mark.name, pid=mark.pid, argv=mark.argv)
    if left:
        names = ", ".join(f"{m.name} (pid {m.pid})" for m in left)
        raise SettingsError(
            f"INGEST_DATA_DIR: processes left by an earlier run would not end: {names}"
        )


def _wait_gone(marks: list[Mark], timeout: float) -> list[Mark]:
    deadline = time.monotonic() + timeout
    left = [m for m in marks if m.alive()]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL)
        left = [m for m in left if m.alive()]
    return left


def _signal(mark: Mark, sig: signal.Signals) -> None:
    """Signal the recorded process only: through a pidfd (pinned to one process)
    checked against the start time, so a pid reused meanwhile is never hit."""
    try:
        fd = os.pidfd_open(mark.pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):  # no pidfd here: a check, then the pid itself
        if mark.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(mark.pid, sig)
        return
    try:
        if mark.alive():  # the fd refers to the process that has this start time
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
