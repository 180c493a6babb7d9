"""Picking up after a crash, once, when the watcher starts.

Three gaps can open when the watcher dies mid-way:
- a file was claimed (moved into `work/`) but its row was never written:
  it is recorded now, with origin `recovery`, under the path its claim
  folder's name remembers;
- a row was written final (failed, duplicate) but its bytes never left
  `work/`: they are moved now (to failed/ with the reason file, or done/), and
  `final_path` recorded; the same for a worker's settled rows left alone for
  `RECOVERY_MOVE_GRACE` seconds (a worker that died between the two steps);
- a row was written but never put in a batch: it is batched now.

Only this inbox's claim folders are taken back (their names start with its
tag), so watchers of other inboxes sharing the work area are left alone.
Empty claim folders (a crash between `mkdir` and `rename`) are removed.

Recovery never stops the start on one file: each leftover is described
(which never raises), recorded through the recorder (which isolates a file
whose row fails), and each unfinished move is tried on its own. A leftover
whose name a claim would not give (bytes that are not UTF-8, too long: left by
an older version) is first renamed in its claim folder to the name a claim
gives now.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.core.text import shown
from reka_ingest.files.manifests import is_manifest
from reka_ingest.files.outbox import file_done, file_failed
from reka_ingest.files.sidecars import candidates
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import failed_file, known_work_paths, unbatched_files
from reka_ingest.ledger.leftovers import Unmoved, unmoved_files
from reka_ingest.ledger.uploads import set_final_path
from scheduler.batcher import Batcher
from scheduler.claim import claim_folder_name, rel_dir_of_claim, work_name
from scheduler.constants import RECOVERY_MOVE_GRACE, RECOVERY_QUERY_LIMIT
from scheduler.describe import DEFAULT_RULES, MetadataRules, describe
from scheduler.names import is_sidecar
from scheduler.recorder import Recorder
from scheduler.sidecar import DefaultsReader
from scheduler.url_intake import ManifestIntake

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Orphan:
    work_path: str
    rel_path: str
    sidecar_path: str | None
    lone_sidecar: bool = False  # a sidecar no image in its claim folder owns


def _claims(work_dir: str, tag: str) -> list[_Orphan]:
    """Every image sitting in one of this inbox's claim folders."""
    found: list[_Orphan] = []
    prefix = f"{tag}-"
    try:
        folders = [e for e in os.scandir(work_dir) if e.name.startswith(prefix)]
    except FileNotFoundError:
        return found
    for entry in folders:
        if not entry.is_dir(follow_symlinks=False):
            continue
        rel_dir = rel_dir_of_claim(entry.name)
        path = _plain_folder(entry.path, work_dir, tag, rel_dir)
        try:
            names = [e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        if not names:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            continue
        names = [_plain(path, n) for n in names]
        sidecars = [n for n in names if is_sidecar(n)]
        owned: set[str] = set()
        for name in names:
            if is_sidecar(name):
                continue
            own = [s for s in sidecars if s in candidates(name)]
            owned.update(own[:1])
            found.append(
                _Orphan(
                    work_path=os.path.join(path, name),
                    rel_path=os.path.join(rel_dir, name),
                    sidecar_path=os.path.join(path, own[0]) if own else None,
                )
            )
        found.extend(
            _Orphan(
                work_path=os.path.join(path, name),
                rel_path=os.path.join(rel_dir, name),
                sidecar_path=None,
                lone_sidecar=True,
            )
            for name in sidecars
            if name not in owned
        )
    return found


def _plain_folder(path: str, work_dir: str, tag: str, rel_dir: str) -> str:
    """A claim folder whose name is not plain text (not one this service makes)
    renamed to one that is, so its files' work paths can be stored and opened."""
    if shown(path) == path:
        return path
    plain = os.path.join(work_dir, claim_folder_name(tag, rel_dir))
    try:
        os.rename(path, plain)
    except OSError as err:
        log.warning("recovery.rename_failed", folder=shown(path), error=err.strerror)
        return path
    return plain


def _plain(folder: str, name: str) -> str:
    """`name`, renamed in `folder` to the name a claim gives now when they differ
    (with `~N` before the extension when that name is taken)."""
    plain = work_name(name)
    if plain == name:
        return name
    stem, ext = os.path.splitext(plain)
    for candidate in [plain, *(work_name(f"{stem}~{i}{ext}") for i in range(1, 10))]:
        try:
            if os.path.lexists(os.path.join(folder, candidate)):
                continue
            os.rename(os.path.join(folder, name), os.path.join(folder, candidate))
        except OSError as err:
            log.warning("recovery.rename_failed", folder=shown(folder), error=err.strerror)
            return name
        return candidate
    return name


def recover_claims(
    recorder: Recorder,
    *,
    ledger: Ledger,
    work_dir: str,
    tag: str,
    source_root: str,
    defaults: DefaultsReader,
    max_image_bytes: int,
    rules: MetadataRules = DEFAULT_RULES,
    clock: Callable[[], float] = time.time,
    manifests: ManifestIntake | None = None,
) -> int:
    """Record claimed files that have no row; returns how many were recorded (an image
    URL list is handed to `manifests`, which reads it again from its start: the lines
    already recorded are skipped by their work paths)."""
    orphans = _claims(work_dir, tag)
    if not orphans:
        return 0
    known = known_work_paths(ledger, [o.work_path for o in orphans])
    count = 0
    for orphan in orphans:
        if orphan.work_path in known:
            continue
        if manifests is not None and not orphan.lone_sidecar and is_manifest(orphan.rel_path):
            manifests.start(orphan.work_path, orphan.rel_path, Origin.RECOVERY, clock())
            count += 1
            continue
        if orphan.lone_sidecar:
            new = failed_file(
                path=orphan.rel_path,
                source_root=source_root,
                work_path=orphan.work_path,
                origin=Origin.RECOVERY,
                seen_at=clock(),
                reason=Reason.ORPHAN_SIDECAR,
                message="a sidecar found alone in the work area at start, with no image "
                "beside it (a crash cut its handling short)",
            )
        else:
            new = describe(
                orphan.work_path,
                rel_path=orphan.rel_path,
                source_root=source_root,
                origin=Origin.RECOVERY,
                seen_at=clock(),
                sidecar_path=orphan.sidecar_path,
                defaults=defaults,
                max_image_bytes=max_image_bytes,
                rules=rules,
            )
        recorder.add(new)
        count += 1
    recorder.flush()
    log.info("recovery.claims", recorded=count, already_known=len(known))
    return count


def finish_moves(
    settings: IngestSettings, ledger: Ledger, *, work_dir: str, tag: str, now: float
) -> int:
    """Move the bytes of settled rows a crash left in this inbox's claim folders."""
    found = [c.work_path for c in _claims(work_dir, tag) if not c.lone_sidecar]
    rows = unmoved_files(ledger, found) if found else []
    moves: list[tuple[int, str]] = []
    for row in rows:
        if not row.from_intake and now - row.updated_at < RECOVERY_MOVE_GRACE:
            continue  # a live worker may be moving it right now
        try:
            final = _finish_move(settings, row)
        except Exception:  # one file's move never stops the start
            log.exception("recovery.move_failed", file_id=row.id, path=row.path)
            continue
        if final is not None:
            moves.append((row.id, final))
    set_final_path(ledger, moves, now=now)
    if moves:
        log.info("recovery.moves_finished", moved=len(moves))
    return len(moves)


def _finish_move(settings: IngestSettings, row: Unmoved) -> str | None:
    if not os.path.lexists(row.work_path):
        return None
    if row.state == FileState.FAILED:
        return file_failed(
            settings,
            work_path=row.work_path,
            rel_path=row.path,
            file_id=row.id,
            reason=row.reason or "unknown",
            message=row.message or "",
            extra={"sha256": row.sha256, "origin": row.origin},
        )
    return file_done(settings, work_path=row.work_path, rel_path=row.path, file_id=row.id)


def adopt_unbatched(ledger: Ledger, batcher: Batcher, url_batcher: Batcher | None = None) -> int:
    """Put rows recorded but never batched into batches; returns how many. URL rows go
    to `url_batcher` (a request is one kind), file rows to `batcher`."""
    count = 0
    for urls, into in ((False, batcher), (True, url_batcher or batcher)):
        last_seen = -1
        while True:
            found = unbatched_files(ledger, limit=RECOVERY_QUERY_LIMIT, urls=urls)
            rows = [r for r in found if r[0] > last_seen and not into.holds(r[0])]
            if not rows:
                break
            for file_id, size in rows:
                into.add(file_id, size)
                last_seen = max(last_seen, file_id)
            count += len(rows)
        into.flush()
    if count:
        log.info("recovery.unbatched", batched=count)
    return count
