"""Where a file's bytes go once it has an outcome.

Uploaded files move to `done/` (or stay, or are deleted: INGEST_AFTER_UPLOAD);
failed files move to `failed/` beside a `NAME.error.json` that says why, so a
person can read the reason without the ledger. Both keep the path the user
dropped the file under. Nothing here raises for a missing source: a file that
vanished still gets its reason file.

A claimed file sits in a claim folder, `work/<claim>/NAME`, with its sidecar
(if any) beside it as `NAME.json` or `STEM.json`; the watcher never puts two
files that could own the same sidecar name in one folder, so the sidecar
travels with its image. Claim folders are shared by many files, so moving one
file does not remove its folder: `remove_empty_claim_folders` does, once for a whole
batch. Files recorded in place (a backfill of the user's own tree) never move:
`in_place=True` leaves them where they are and only writes the reason file.

Nothing here stops the caller's other files: every name in `done/` and
`failed/` is derived by `reka_ingest.files.names.fit_path`, so it fits NAME_MAX with
room for `.<file_id>` and `.error.json.tmp` (the full name stays in the ledger
and the reason file); a move or write that still fails falls back to a flat
`<file_id><ext>` name at the folder's top, and if that fails too the bytes
stay where they are (the watcher's recovery tries again at its next start)
and the function says so by returning None.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import AfterUpload, IngestSettings
from reka_ingest.core.text import shown
from reka_ingest.files.names import fit_name, fit_path
from reka_ingest.files.sidecars import SIDECAR_SUFFIX, find_sidecar

log = get_logger(__name__)

ERROR_SUFFIX = ".error.json"
# Bytes kept free in a derived last name: `.<file_id>` (20 digits) and `.error.json.tmp`.
_NAME_RESERVE = 40
_FLAT_EXT_MAX = 16


# Paths are plain strings here (os.path, not pathlib): this runs for every file a
# worker finishes, and a string costs no parsing.


def _free_name(target: str, file_id: int) -> str:
    """`a/b.jpg`, or `a/b.<file_id>.jpg` when something is already there."""
    if not os.path.lexists(target):
        return target
    stem, suffix = os.path.splitext(target)
    return f"{stem}.{file_id}{suffix}"


def _target(root: str, rel_path: str, file_id: int) -> str:
    """Where a file dropped as `rel_path` goes below `root`: the same folders and
    name, shortened to fit (it cannot climb out), `.<file_id>` added when taken."""
    return _free_name(os.path.join(root, fit_path(rel_path, reserve=_NAME_RESERVE)), file_id)


def _flat(root: str, rel_path: str, file_id: int) -> str:
    """The fallback name when the derived one cannot be made: `<root>/<file_id><ext>`."""
    ext = os.path.splitext(fit_name(os.path.basename(rel_path) or "x"))[1]
    return os.path.join(root, f"{file_id}{ext if len(ext) <= _FLAT_EXT_MAX else ''}")


# Folders this process made (or found) under done/ and failed/, so a move makes
# its folder once, not once per file. A folder removed since is made again on demand.
_made: set[str] = set()


def _move(src: str, target: str) -> bool:
    parent = os.path.dirname(target)
    if parent not in _made:
        os.makedirs(parent, exist_ok=True)
        _made.add(parent)
    try:
        os.replace(src, target)
    except FileNotFoundError:
        if os.path.isdir(parent) or not os.path.lexists(src):
            return False
        _made.discard(parent)  # removed under us: make it again, once
        return _move(src, target)
    except OSError:
        # Another filesystem (done/ elsewhere): copy then remove.
        try:
            shutil.move(src, target)
        except FileNotFoundError:
            return False
    return True


@functools.lru_cache(maxsize=16)
def work_root(work_dir: Path) -> Path:
    """The work area's resolved path: resolved once per process, not twice per file."""
    return work_dir.resolve()


@functools.lru_cache(maxsize=16)
def _work_roots(work_dir: Path) -> frozenset[str]:
    return frozenset({str(work_dir), str(work_root(work_dir))})


@dataclass(frozen=True, slots=True)
class _Places:
    """Where one settings object puts files, as strings: `settings.work_dir`,
    `done_path` and `failed_path` are computed (a new Path) at each call, and a
    worker asks for them once or more per file."""

    settings: IngestSettings  # held, so its id is not reused while the entry lives
    work_roots: frozenset[str]  # the work area as configured and as resolved
    work_prefixes: tuple[str, ...]  # each with a trailing `/`
    done: str
    failed: str


_PLACES: dict[int, _Places] = {}
_PLACES_MAX = 16


def _places(settings: IngestSettings) -> _Places:
    hit = _PLACES.get(id(settings))
    if hit is None or hit.settings is not settings:
        if len(_PLACES) >= _PLACES_MAX:
            _PLACES.clear()
        roots = _work_roots(settings.work_dir)
        hit = _PLACES[id(settings)] = _Places(
            settings,
            roots,
            tuple(os.path.join(r, "") for r in roots),
            str(settings.done_path),
            str(settings.failed_path),
        )
    return hit


def in_work_area(settings: IngestSettings, path: str) -> bool:
    """Whether `path` lies below the work area; a file whose path does not was
    recorded in place (a backfill, a refused link) and never moves.

    The one test of it, for the recorder, the uploader, the poll sweep and
    `reka-ingest retry`: a plain prefix test against the work area as configured
    and as resolved (the backfill refuses roots that overlap the data folder, so
    no in-place path reaches the work area through a link)."""
    return path.startswith(_places(settings).work_prefixes)


def _in_claim_folder(settings: IngestSettings, folder: str) -> bool:
    """Whether `folder` is a claim folder (a folder directly below the work area)."""
    return os.path.dirname(folder) in _places(settings).work_roots


def _companions(settings: IngestSettings, src: str) -> list[str]:
    """src's sidecar in its claim folder (see `reka_ingest.files.sidecars`), if there is one."""
    if not _in_claim_folder(settings, os.path.dirname(src)):
        return []
    side = find_sidecar(src)
    return [side] if side is not None else []


def _move_with_companions(settings: IngestSettings, src: str, target: str, file_id: int) -> bool:
    """Move `src` to `target` and its sidecar beside it: under its own name when the
    image keeps its name, else as `target.json` (so the pairing rule still holds)."""
    companions = _companions(settings, src)
    moved = _move(src, target)
    parent = os.path.dirname(target)
    renamed = os.path.basename(target) != os.path.basename(src)
    for extra in companions:
        side = target + SIDECAR_SUFFIX if renamed else os.path.join(parent, os.path.basename(extra))
        try:
            _move(extra, _free_name(side, file_id))
        except OSError as err:  # the image is placed; its sidecar stays, and is logged
            log.error("outbox.sidecar_move_failed", file_id=file_id, error=err.strerror)
    return moved


def remove_empty_claim_folders(settings: IngestSettings, work_paths: Iterable[str]) -> None:
    """Remove the claim folders of these files that are empty now (once per folder)."""
    for folder in {os.path.dirname(p) for p in work_paths}:
        if _in_claim_folder(settings, folder):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # fails (and stays) while other files are in it


def file_done(
    settings: IngestSettings,
    *,
    work_path: str,
    rel_path: str,
    file_id: int,
    in_place: bool = False,
) -> str | None:
    """Put an uploaded file where INGEST_AFTER_UPLOAD says; returns its new path, if any."""
    if in_place or settings.after_upload is AfterUpload.KEEP:
        return work_path
    if settings.after_upload is AfterUpload.DELETE:
        for path in [work_path, *_companions(settings, work_path)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return None
    return _place(settings, _places(settings).done, work_path, rel_path, file_id)


def _place(
    settings: IngestSettings, root: str, work_path: str, rel_path: str, file_id: int
) -> str | None:
    """Move `work_path` (and its sidecar) below `root`; the path it went to, or None."""
    for make in (_target, _flat):  # the flat name only made when the derived one fails
        target = make(root, rel_path, file_id)
        try:
            return target if _move_with_companions(settings, work_path, target, file_id) else None
        except OSError as err:
            log.error(
                "outbox.move_failed",
                file_id=file_id,
                path=rel_path,
                target=target,
                error=err.strerror or str(err),
            )
    return None


def file_failed(
    settings: IngestSettings,
    *,
    work_path: str,
    rel_path: str,
    file_id: int,
    reason: str,
    message: str,
    extra: dict[str, Any] | None = None,
    in_place: bool = False,
) -> str | None:
    """Move a failed file to failed/, write NAME.error.json beside it; return that
    path. When no reason file can be written (a full disk), the path the bytes went
    to, which the poll sweep's settling takes as a failed file whose reason file is
    still to write (`reka_ingest.ledger.polling.take_unsettled_failures`); None when
    neither was placed. Bytes already in failed/ (that retry) stay where they are."""
    root = _places(settings).failed
    moved_to: str | None = None
    if work_path.startswith(os.path.join(root, "")) and os.path.isfile(work_path):
        moved_to = work_path
    elif not in_place and os.path.isfile(work_path) and not os.path.islink(work_path):
        moved_to = _place(settings, root, work_path, rel_path, file_id)
        if moved_to is None and os.path.lexists(work_path):
            return None  # the bytes are still in work/: recovery tries again
    record = {
        "path": rel_path,
        "file_id": file_id,
        "reason": reason,
        "message": message,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "moved_to": moved_to,
        **(extra or {}),
    }
    target = moved_to or _target(root, rel_path, file_id)
    for error_path in (target + ERROR_SUFFIX, _flat(root, rel_path, file_id) + ERROR_SUFFIX):
        try:
            _write_reason(error_path, record)
        except (OSError, ValueError) as err:
            log.error(
                "outbox.reason_file_failed",
                file_id=file_id,
                path=error_path,
                error=getattr(err, "strerror", None) or str(err),
            )
            continue
        log.info("file_failed", file_id=file_id, path=rel_path, reason=reason, detail=message)
        return error_path
    if moved_to is not None:
        log.warning("outbox.reason_file_deferred", file_id=file_id, path=moved_to, reason=reason)
    return moved_to


def _write_reason(error_path: str, record: dict[str, Any]) -> None:
    """Write the reason file whole or not at all: a write that fails midway (a full
    disk) leaves neither it nor its temporary file behind."""
    os.makedirs(os.path.dirname(error_path), exist_ok=True)
    tmp = error_path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(shown(json.dumps(record, indent=2, ensure_ascii=False)) + "\n")
        os.replace(tmp, error_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
