"""The places the service writes and the ports it listens on, checked before a
process relies on them, and the operating system's refusals of either said in
words: an `OSError` becomes `PlaceUnwritable` or `PortUnavailable`
(reka_ingest.core.errors), which a command prints as one line.

Translated once, here: `unwritable` for an OSError about a path (the command
line's top calls it for whatever a command did not catch), `listen` and
`require_free_port` where a server binds, `require_writable` where a process
is about to hand its work to another program (Celery's beat writes its
schedule after `exec`, where no translation of ours reaches).
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from reka_ingest.core.errors import PlaceUnwritable, PortUnavailable

# What a refused write looks like: no permission, a read-only filesystem, no room.
WRITE_REFUSALS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
)


def unwritable(err: BaseException) -> PlaceUnwritable | None:
    """`err` as a refused write to the place it names, or None when it is no such
    error (another errno, or no path named: a bug or a passing fault, not a place)."""
    if not isinstance(err, OSError) or err.errno not in WRITE_REFUSALS or not err.filename:
        return None
    place = os.fsdecode(err.filename)
    reason = err.strerror or errno.errorcode.get(err.errno or 0, type(err).__name__)
    return PlaceUnwritable(
        f"cannot write {place}: {reason}; the service must be able to write there"
        " (INGEST_DATA_DIR is where it keeps its state)"
    )


def require_writable(path: Path) -> None:
    """Raise `PlaceUnwritable` unless the file `path` can be written: a file can be made
    in its folder (made when missing) and `path`, when it exists, opened for writing."""
    try:
        require_writable_folder(path.parent)
        if path.exists():
            path.open("r+b").close()
    except OSError as err:
        failure = unwritable(err)
        if failure is None:
            raise
        raise failure from None


def require_writable_folder(folder: Path) -> None:
    """Raise `PlaceUnwritable` unless a file can be made in `folder` (made when missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        except OSError as err:  # named after the folder, not the probe's random name
            raise OSError(err.errno, err.strerror, str(folder)) from err
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        failure = unwritable(err)
        if failure is None:
            raise
        raise failure from None


def port_taken(host: str, port: int, err: OSError, setting: str) -> PortUnavailable:
    """The bind of `host:port` refused with `err`, in words naming what chose the port."""
    reason = err.strerror or str(err)
    if err.errno == errno.EADDRINUSE:
        advice = "stop what holds it, or pick another port"
    else:
        advice = "pick an address of this machine, or another port"
    return PortUnavailable(f"{setting}: cannot listen on {host}:{port}: {reason}; {advice}")


def listen(host: str, port: int, setting: str) -> socket.socket:
    """A TCP socket bound to `host:port` and listening (port 0: any free port), as a
    server would bind it (SO_REUSEADDR: a port left in TIME_WAIT is free); a port that
    cannot be bound is `PortUnavailable`, naming `setting` (the option or variable)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise PortUnavailable(f"{setting}: cannot listen on {host}:{port}: {err}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as err:
        sock.close()
        raise port_taken(host, port, err, setting) from None
    return sock


def require_free_port(host: str, port: int, setting: str) -> None:
    """Raise `PortUnavailable` unless `host:port` can be bound now (checked by binding it
    and letting go: for a server another program starts, which binds it itself)."""
    listen(host, port, setting).close()
