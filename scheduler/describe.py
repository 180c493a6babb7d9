"""From a file we own to a `NewFile` the ledger can record: size, mtime, sha256
of its bytes, and its sidecar metadata; or the reason it is already failed.

The file is opened once, without following a symbolic link, and what is
hashed is what `fstat` describes. An empty file, one over the size limit and
one with a bad sidecar are recorded as failed at once: no batch slot is spent
on a file that cannot be uploaded. Any other error while looking at this one
file (an odd name, an odd sidecar the checks did not foresee) makes it fail
alone with `intake_failed` and the error's text: `describe` never raises.
"""

from __future__ import annotations

import errno
import os
import stat

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Origin, Reason
from reka_ingest.files.hashing import sha256_of
from reka_ingest.ledger.intake import NewFile
from scheduler import sidecar as sc


def _open(work_path: str) -> int:
    """Open without following a symlink; `FileRejected` saying why not."""
    try:
        return os.open(work_path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileRejected(
            Reason.FILE_MISSING, "the file disappeared after it was claimed"
        ) from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FileRejected(Reason.REFUSED_PATH, "symbolic links are never followed") from None
        raise FileRejected(Reason.UNREADABLE, f"cannot open the file: {err.strerror}") from None


def _check(st: os.stat_result, max_image_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRejected(Reason.REFUSED_PATH, "not a regular file")
    if st.st_size == 0:
        raise FileRejected(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    if st.st_size > max_image_bytes:
        raise FileRejected(
            Reason.TOO_LARGE,
            f"{st.st_size} bytes is over the limit of {max_image_bytes} bytes "
            "(INGEST_MAX_IMAGE_BYTES)",
        )


def describe(
    work_path: str,
    *,
    rel_path: str,
    source_root: str,
    origin: Origin,
    seen_at: float,
    sidecar_path: str | None,
    defaults: sc.DefaultsReader | None,
    max_image_bytes: int,
) -> NewFile:
    """Hash the file at `work_path` and read its sidecar; never raises."""
    size, mtime = 0, 0.0
    try:
        fd = _open(work_path)
        try:
            st = os.fstat(fd)
            size, mtime = st.st_size, st.st_mtime
            _check(st, max_image_bytes)
            layers = defaults.layers(os.path.dirname(rel_path)) if defaults is not None else []
            meta = sc.load(sidecar_path, layers)
            try:
                digest = sha256_of(fd)
            except OSError as err:
                raise FileRejected(
                    Reason.UNREADABLE, f"cannot read the file: {err.strerror}"
                ) from None
        finally:
            os.close(fd)
    except Exception as err:  # noqa: BLE001 - one file's failure is that file's outcome
        reason, message = (
            (Reason(err.reason), err.message)
            if isinstance(err, FileRejected)
            else (Reason.INTAKE_FAILED, f"cannot be taken in: {type(err).__name__}: {err}")
        )
        return NewFile(
            path=rel_path,
            source_root=source_root,
            work_path=work_path,
            origin=origin,
            size=size,
            mtime=mtime,
            sha256=None,
            seen_at=seen_at,
            reason=reason,
            message=message,
        )
    return NewFile(
        path=rel_path,
        source_root=source_root,
        work_path=work_path,
        origin=origin,
        size=size,
        mtime=mtime,
        sha256=digest,
        seen_at=seen_at,
        sidecar=meta.metadata,
        index_flag=meta.index,
    )
