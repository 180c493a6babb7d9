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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from worker.logs import get_logger
from worker.settings import AfterUpload, IngestSettings
from worker.sidecar_files import find_sidecar

log = get_logger(__name__)

ERROR_SUFFIX = ".error.json"


# Paths are plain strings here: pathlib's parsing was a sixth of a worker's time.


def _free_name(target: str, file_id: int) -> str:
    """`a/b.jpg`, or `a/b.<file_id>.jpg` when something is already there."""
    if not os.path.lexists(target):
        return target
    stem, suffix = os.path.splitext(target)
    return f"{stem}.{file_id}{suffix}"


def _safe_relative(rel_path: str) -> str:
    """A relative path that cannot climb out of its folder."""
    parts = [p for p in rel_path.split(os.sep) if p not in ("", ".", "..")]
    return os.path.join(*parts) if parts else "unnamed"


# Folders this process made (or found) under done/ and failed/: a mkdir per file
# cost more than the move itself. A folder removed since is made again on demand.
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


def in_work_area(settings: IngestSettings, path: str) -> bool:
    """Whether `path` lies below the work area (else it was recorded in place)."""
    return any(path.startswith(os.path.join(root, "")) for root in _work_roots(settings.work_dir))


def _in_claim_folder(settings: IngestSettings, folder: str) -> bool:
    """Whether `folder` is a claim folder (a folder directly below the work area)."""
    return os.path.dirname(folder) in _work_roots(settings.work_dir)


def _companions(settings: IngestSettings, src: str) -> list[str]:
    """src's sidecar in its claim folder (see `worker.sidecar_files`), if there is one."""
    if not _in_claim_folder(settings, os.path.dirname(src)):
        return []
    side = find_sidecar(src)
    return [side] if side is not None else []


def _move_with_companions(settings: IngestSettings, src: str, target: str, file_id: int) -> bool:
    companions = _companions(settings, src)
    moved = _move(src, target)
    parent = os.path.dirname(target)
    for extra in companions:
        _move(extra, _free_name(os.path.join(parent, os.path.basename(extra)), file_id))
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
    target = _free_name(os.path.join(settings.done_path, _safe_relative(rel_path)), file_id)
    moved = _move_with_companions(settings, work_path, target, file_id)
    return target if moved else None


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
) -> str:
    """Move a failed file to failed/, write NAME.error.json beside it; return that path."""
    src = Path(work_path)
    target = Path(_free_name(os.path.join(settings.failed_path, _safe_relative(rel_path)), file_id))
    moved = False
    if not in_place and src.is_file() and not src.is_symlink():
        moved = _move_with_companions(settings, work_path, str(target), file_id)
    record = {
        "path": rel_path,
        "file_id": file_id,
        "reason": reason,
        "message": message,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "moved_to": str(target) if moved else None,
        **(extra or {}),
    }
    error_path = target.with_name(target.name + ERROR_SUFFIX)
    error_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = error_path.with_name(error_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, error_path)
    log.info("file_failed", file_id=file_id, path=rel_path, reason=reason, detail=message)
    return str(error_path)
