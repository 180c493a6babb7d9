"""From a file we own to a `NewFile` the ledger can record: size, mtime, sha256
of its bytes, and its metadata (sidecar, folder defaults, folder-derived values,
EXIF capture time: `scheduler.sidecar` orders them); or the reason it is
already failed.

The file is opened once, without following a symbolic link, and what is
hashed is what `fstat` describes; a file of up to HASH_CHUNK_BYTES is read once,
whole, and its EXIF block (when it is needed) and its hash both come from those
bytes; a larger one has its EXIF block read from the same descriptor before the
hash (headers only, then back to the start). An empty file, one over the size
limit, one with a bad sidecar and one whose folders do not fit
INGEST_PATH_METADATA (unless its rule is `omit`) are recorded as failed at once:
no batch slot is spent on a file that cannot be uploaded. Any other error while
looking at this one file (an odd name, an odd sidecar the checks did not
foresee) makes it fail alone with `intake_failed` and the error's text:
`describe` never raises.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, tzinfo

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.settings import IngestSettings, PathMismatch
from reka_ingest.core.states import Origin, Reason
from reka_ingest.core.zones import parse_zone
from reka_ingest.files.exif import capture_time
from reka_ingest.files.hashing import sha256_of, sha256_of_bytes, whole_small_file
from reka_ingest.ledger.intake import NewFile
from scheduler import sidecar as sc
from scheduler.path_metadata import FolderMetadata


@dataclass(frozen=True, slots=True)
class MetadataRules:
    """What `describe` adds to a file's own metadata: its folders' values and the zone
    of EXIF capture times without an offset. The default: no folder metadata, UTC."""

    folders: FolderMetadata = field(default_factory=FolderMetadata)
    exif_zone: tzinfo = UTC

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> MetadataRules:
        """The rules the settings name (parsed once per distinct value, then cached)."""
        return _rules(
            settings.path_metadata, settings.path_metadata_mismatch, settings.exif_timezone
        )


@functools.lru_cache(maxsize=16)
def _rules(pattern: str | None, mismatch: PathMismatch, zone: str) -> MetadataRules:
    return MetadataRules(FolderMetadata.parse(pattern, mismatch), parse_zone(zone))


DEFAULT_RULES = MetadataRules()


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


def _capture_time(fd: int, zone: tzinfo, data: bytes | None = None) -> int | None:
    """The EXIF capture time of the open file `fd`, read from its start (from `data`,
    its bytes already read, when given)."""
    if data is not None:
        return capture_time(io.BytesIO(data), zone)
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, "rb", closefd=False) as fh:  # the caller keeps and closes `fd`
        return capture_time(fh, zone)


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
    rules: MetadataRules = DEFAULT_RULES,
) -> NewFile:
    """Hash the file at `work_path` and gather its metadata; never raises."""
    size, mtime = 0, 0.0
    try:
        fd = _open(work_path)
        try:
            st = os.fstat(fd)
            size, mtime = st.st_size, st.st_mtime
            _check(st, max_image_bytes)
            rel_dir = os.path.dirname(rel_path)
            folder_values = rules.folders.values(rel_dir)  # FileRejected(path_mismatch)
            layers = defaults.layers(rel_dir) if defaults is not None else []
            data = whole_small_file(fd, st.st_size)
            meta = sc.load(
                sidecar_path,
                layers,
                folder_values=folder_values,
                capture_time=functools.partial(_capture_time, fd, rules.exif_zone, data),
            )
            try:
                if data is not None:
                    digest = sha256_of_bytes(data)
                else:
                    os.lseek(fd, 0, os.SEEK_SET)  # the EXIF reader may have moved it
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
