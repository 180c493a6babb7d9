"""Taking a whole file: one atomic rename out of the inbox into a claim folder.

`work/<claim folder>/NAME`: the rename is the claim. Whoever's rename succeeds
owns the file; a rename that finds the file gone lost the race (or the file was
deleted) and is skipped without an error. The sidecar, if any, is moved into
the same claim folder after the image, so it travels with it from then on.

A claim folder's name is `<inbox tag>-<process token><counter>[.<relative
folder, base64url>]`: the tag says which inbox claimed it (recovery after a
crash takes back only its own), the encoded folder lets recovery restore the
path the user dropped the file under (left out when the name would grow too
long). `ClaimFolders` keeps one folder open per relative folder and puts many
claims in it (so neither the watcher's claim nor the worker's cleanup costs a
folder per file); it opens a new one when a name, or a sidecar name one of its
images could own, is already there, so in any claim folder each sidecar
belongs to exactly one image. Workers remove
a claim folder once it is empty; the watcher's scans remove what is left.

The rename is atomic only within one filesystem, so `check_same_filesystem`
runs at start and names the two settings when the inbox and the work area are
apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import IngestSettings
from reka_ingest.files.names import fit_name
from reka_ingest.files.sidecars import SIDECAR_SUFFIX, candidates
from scheduler.constants import (
    CLAIM_FOLDER_FILES,
    INBOX_TAG_CHARS,
    MAX_CLAIM_NAME,
    MAX_OPEN_CLAIM_FOLDERS,
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A file now owned by us, at `work_path`, with its sidecar (if any) beside it."""

    work_path: str
    rel_path: str  # where the user dropped it, relative to the inbox
    sidecar_path: str | None


def own_folders(settings: IngestSettings) -> dict[str, Path]:
    """The folders the service writes, by the setting that names each."""
    return {
        "INGEST_DATA_DIR": settings.data_dir,
        "INGEST_DONE_DIR": settings.done_path,
        "INGEST_FAILED_DIR": settings.failed_path,
    }


def overlapping(path: Path, folders: dict[str, Path]) -> tuple[str, Path] | None:
    """The first of `folders` that is `path`, holds it or lies inside it (links
    resolved), by name; None when `path` stands apart from all of them."""
    real = Path(os.path.realpath(path))
    for name, folder in folders.items():
        theirs = Path(os.path.realpath(folder))
        if real == theirs or real in theirs.parents or theirs in real.parents:
            return name, folder
    return None


def _check_apart(settings: IngestSettings) -> None:
    """Refuse an inbox that holds the service's own folders, or lies inside one: the
    watcher would claim its own ledger, work area and outbox (an empty INGEST_INBOX
    is the current folder, where `./var` usually is)."""
    hit = overlapping(settings.inbox, own_folders(settings))
    if hit is not None:
        name, folder = hit
        raise SettingsError(
            f"INGEST_INBOX ({settings.inbox}) and {name} ({folder}) overlap: the watcher "
            "would take the service's own files as dropped ones; give each its own folder"
            " (e.g. ./inbox and ./var)"
        )


def check_same_filesystem(settings: IngestSettings) -> None:
    """Create the inbox and work area; fail clearly unless they are apart (`_check_apart`)
    and one rename can move between them."""
    _check_apart(settings)
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
    return hashlib.sha256(os.fsencode(os.path.realpath(inbox))).hexdigest()[:INBOX_TAG_CHARS]


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
        encoded = base64.urlsafe_b64encode(os.fsencode(rel_dir)).decode().rstrip("=")
        if len(name) + 1 + len(encoded) <= MAX_CLAIM_NAME:
            name = f"{name}.{encoded}"
    return name


def rel_dir_of_claim(name: str) -> str:
    """The relative folder a claim folder's name carries ('' when none or unreadable)."""
    _, _, encoded = name.partition(".")
    if not encoded:
        return ""
    try:
        rel = os.fsdecode(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        return ""
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/")]
    return os.path.join(*parts) if parts else ""


@dataclass(slots=True)
class _Folder:
    path: str
    taken: set[str] = field(default_factory=set)  # names used, and sidecar names owned
    claims: int = 0


class ClaimFolders:
    """The open claim folders of one watcher: one per relative folder, many claims each."""

    def __init__(
        self,
        work_dir: str,
        tag: str,
        *,
        per_folder: int = CLAIM_FOLDER_FILES,
        max_open: int = MAX_OPEN_CLAIM_FOLDERS,
    ) -> None:
        self.work_dir = work_dir
        self.tag = tag
        self.per_folder = per_folder
        self.max_open = max_open
        self._open: OrderedDict[str, _Folder] = OrderedDict()  # rel_dir -> folder, LRU order

    def open_paths(self) -> set[str]:
        return {f.path for f in self._open.values()}

    def folder_for(self, rel_dir: str, keys: set[str]) -> str:
        """A claim folder for `rel_dir` where none of `keys` is taken yet (made if need be)."""
        folder = self._open.get(rel_dir)
        if folder is None or folder.claims >= self.per_folder or not folder.taken.isdisjoint(keys):
            folder = self._new(rel_dir)
        else:
            self._open.move_to_end(rel_dir)
        return folder.path

    def taken(self, rel_dir: str, keys: set[str]) -> None:
        """A claim landed in `rel_dir`'s open folder: its names are used there now."""
        folder = self._open[rel_dir]
        folder.taken |= keys
        folder.claims += 1

    def lost(self, rel_dir: str) -> None:
        """`rel_dir`'s open folder vanished (removed once empty): forget it."""
        self._open.pop(rel_dir, None)

    def _new(self, rel_dir: str) -> _Folder:
        path = os.path.join(self.work_dir, claim_folder_name(self.tag, rel_dir))
        os.mkdir(path)
        folder = self._open[rel_dir] = _Folder(path)
        self._open.move_to_end(rel_dir)
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)  # the folder stays; its files leave as usual
        return folder


def claim(
    src: str, *, rel_path: str, folders: ClaimFolders, sidecar: str | None = None
) -> Claimed | None:
    """Move `src` (and its sidecar) into a claim folder; None when it was gone.

    The name in the claim folder is `work_name(src's name)`: plain text that
    fits; from here on no step sees the name's raw bytes or its length.
    """
    rel_dir, original = os.path.dirname(rel_path), os.path.basename(src)
    name = work_name(original)
    keys = {name, *candidates(name)}
    if sidecar is not None:
        keys.add(_sidecar_name(name, original, sidecar))
    for _ in range(2):
        folder = folders.folder_for(rel_dir, keys)
        target = os.path.join(folder, name)
        try:
            os.rename(src, target)
            break
        except FileNotFoundError:
            if os.path.isdir(folder):
                return None  # the file is gone: someone else took it, or it was deleted
            folders.lost(rel_dir)  # a worker removed it once empty: open another
    else:
        return None
    folders.taken(rel_dir, keys)
    moved_sidecar: str | None = None
    if sidecar is not None:
        sidecar_target = os.path.join(folder, _sidecar_name(name, original, sidecar))
        try:
            os.rename(sidecar, sidecar_target)
            moved_sidecar = sidecar_target
        except FileNotFoundError:
            moved_sidecar = None
        except OSError:
            moved_sidecar = sidecar  # cannot move it (permissions): read it where it is
    return Claimed(work_path=target, rel_path=rel_path, sidecar_path=moved_sidecar)


def work_name(name: str) -> str:
    """A claimed file's name in its claim folder: the name shown by the `%XX` rule
    (reka_ingest.files.names), shortened so that its sidecar's `NAME.json` fits too. A
    name that is plain text and short enough keeps itself."""
    return fit_name(name, reserve=len(SIDECAR_SUFFIX))


def _sidecar_name(name: str, original: str, sidecar: str) -> str:
    """The sidecar's name beside the claimed image: its own while the image keeps its
    name, else `NAME.json` for the image's new name (the pairing rule holds)."""
    return os.path.basename(sidecar) if name == original else name + SIDECAR_SUFFIX


def prune_claim_folders(work_dir: str, tag: str, keep: set[str]) -> int:
    """Remove this inbox's empty claim folders, except `keep`; returns how many went."""
    removed = 0
    prefix = f"{tag}-"
    try:
        entries = [e.path for e in os.scandir(work_dir) if e.name.startswith(prefix)]
    except OSError:
        return 0
    for path in entries:
        if path in keep:
            continue
        try:
            os.rmdir(path)  # fails (and is left) when not empty, or not a folder
        except OSError:
            continue
        removed += 1
    return removed
