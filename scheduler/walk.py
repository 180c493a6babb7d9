"""Walking a tree for candidate files: iterative `os.scandir`, no recursion
limit, no symbolic link followed, hidden folders skipped.

Yields the `os.DirEntry` of every non-folder entry with a candidate name
(symbolic links and other odd entries included: the caller refuses them, so
they end up on record instead of silently ignored). A folder that cannot be
read is skipped and the walk carries on; given a list, the walk appends it there
with the reason (the watcher records it), else logs it. Sidecars are not
yielded; given a list, the walk appends their paths to it (for the sidecar checks).
A folder for which `prune(path)` is true is not entered (the caller records why:
INGEST_EXCLUDE, see scheduler.exclusions).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

from reka_ingest.core.logs import get_logger
from scheduler.names import is_candidate_name, is_hidden, is_sidecar

log = get_logger(__name__)


def walk(
    root: str,
    sidecars: list[str] | None = None,
    unreadable: list[tuple[str, str]] | None = None,
    prune: Callable[[str], bool] | None = None,
) -> Iterator[os.DirEntry[str]]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if is_hidden(name):
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        if prune is None or not prune(entry.path):
                            stack.append(entry.path)
                    elif is_candidate_name(name):
                        yield entry
                    elif sidecars is not None and is_sidecar(name):
                        sidecars.append(entry.path)
        except OSError as err:
            why = _too_long(folder) if err.errno == errno.ENAMETOOLONG else None
            why = why or err.strerror or str(err)
            if unreadable is not None:
                unreadable.append((folder, why))
            else:
                log.warning("walk.unreadable_folder", folder=folder, error=why)


def _too_long(folder: str) -> str:
    """Why a folder whose path the system refuses as too long cannot be listed, and
    what to do: its files come in only from a shorter path."""
    size = len(os.fsencode(folder))
    try:
        limit = f"at most {os.pathconf(os.sep, 'PC_PATH_MAX') - 1:,} here"
    except (OSError, ValueError):
        limit = "longer than this system takes"
    return (
        f"its path is {size:,} bytes, {limit} (File name too long): move or rename"
        " the folders above it so the path is shorter"
    )
