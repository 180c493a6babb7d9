"""Taking a whole file: one atomic rename out of the inbox into its own claim folder.

`work/<claim>/NAME`: the rename is the claim. Whoever's rename succeeds owns
the file; a rename that finds the file gone lost the race (or the file was
deleted) and is skipped without an error. The sidecar, if any, is moved into
the same claim folder after the image, so it travels with it from then on.

A claim folder's name is `<inbox tag>-<random>[.<relative folder, base64url>]`:
the tag says which inbox claimed it (recovery after a crash takes back only its
own), the encoded folder lets recovery restore the path the user dropped the
file under (left out when the name would grow too long).

The rename is atomic only within one filesystem, so `check_same_filesystem`
runs at start and names the two settings when the inbox and the work area are
apart.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import itertools
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from scheduler.constants import HASH_CHUNK_BYTES, INBOX_TAG_CHARS, MAX_CLAIM_NAME
from worker.errors import SettingsError
from worker.settings import IngestSettings


@dataclass(frozen=True, slots=True)
class Claimed:
    """A file now owned by us, at `work_path`, with its sidecar (if any) beside it."""

    work_path: str
    rel_path: str  # where the user dropped it, relative to the inbox
    sidecar_path: str | None


def check_same_filesystem(settings: IngestSettings) -> None:
    """Create the inbox and work area; fail clearly unless one rename can move between them."""
    try:
        settings.inbox.mkdir(parents=True, exist_ok=True)
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        inbox_dev = os.stat(settings.inbox).st_dev
        work_dev = os.stat(settings.work_dir).st_dev
    except OSError as err:
        raise SettingsError(
            f"INGEST_INBOX / INGEST_DATA_DIR: cannot create or read {err.filename}: {err.strerror}"
        ) from None
    if inbox_dev != work_dev:
        raise SettingsError(
            f"INGEST_INBOX ({settings.inbox}) and INGEST_DATA_DIR ({settings.data_dir}) must be "
            "on the same filesystem: a file is claimed by one atomic rename into "
            f"{settings.work_dir}, which cannot cross filesystems"
        )


def inbox_tag(inbox: str) -> str:
    """A short, stable name for one inbox (its resolved path, hashed)."""
    return hashlib.sha256(os.path.realpath(inbox).encode()).hexdigest()[:INBOX_TAG_CHARS]


_PROCESS_TOKEN = uuid.uuid4().hex[:16]  # new in every process (and after fork, see below)
_counter = itertools.count()


def _refresh_token() -> None:
    global _PROCESS_TOKEN  # noqa: PLW0603 - a forked child must not reuse its parent's names
    _PROCESS_TOKEN = uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=_refresh_token)


def claim_folder_name(tag: str, rel_dir: str) -> str:
    """Unique without a random draw per file: a per-process token and a counter."""
    name = f"{tag}-{_PROCESS_TOKEN}{next(_counter):x}"
    if rel_dir:
        encoded = base64.urlsafe_b64encode(rel_dir.encode()).decode().rstrip("=")
        if len(name) + 1 + len(encoded) <= MAX_CLAIM_NAME:
            name = f"{name}.{encoded}"
    return name


def rel_dir_of_claim(name: str) -> str:
    """The relative folder a claim folder's name carries ('' when none or unreadable)."""
    _, _, encoded = name.partition(".")
    if not encoded:
        return ""
    try:
        rel = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/")]
    return os.path.join(*parts) if parts else ""


def claim(
    src: str, *, rel_path: str, work_dir: str, tag: str, sidecar: str | None = None
) -> Claimed | None:
    """Move `src` (and its sidecar) into a new claim folder; None when it was gone."""
    folder = os.path.join(work_dir, claim_folder_name(tag, os.path.dirname(rel_path)))
    os.mkdir(folder)
    target = os.path.join(folder, os.path.basename(src))
    try:
        os.rename(src, target)
    except FileNotFoundError:
        os.rmdir(folder)
        return None
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
        raise
    moved_sidecar: str | None = None
    if sidecar is not None:
        sidecar_target = os.path.join(folder, os.path.basename(sidecar))
        try:
            os.rename(sidecar, sidecar_target)
            moved_sidecar = sidecar_target
        except FileNotFoundError:
            moved_sidecar = None
        except OSError:
            moved_sidecar = sidecar  # cannot move it (permissions): read it where it is
    return Claimed(work_path=target, rel_path=rel_path, sidecar_path=moved_sidecar)


def sha256_of(fd: int) -> str:
    """Stream an open file's bytes through sha256, `HASH_CHUNK_BYTES` at a time."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buf)
    while True:
        n = os.readv(fd, [buf])
        if not n:
            break
        digest.update(view[:n])
    return digest.hexdigest()
