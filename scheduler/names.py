"""Which names the watcher takes and which it leaves alone.

Left alone: hidden names (`.*`, in any folder of the path), temp and partial
names (`*.tmp`, `*.part`, `*.crdownload`, `*~`), a folder's `_defaults.json`,
and sidecars (`*.json`), which travel with their image instead of on their own.
Everything else is a candidate: whether it is really an image is the worker's
check, and a file that is not becomes a recorded outcome, not a silent skip.
"""

from __future__ import annotations

import os

from reka_ingest.files.sidecars import SIDECAR_SUFFIX
from scheduler.constants import DEFAULTS_NAME, TEMP_SUFFIXES


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_temp(name: str) -> bool:
    return name.lower().endswith(TEMP_SUFFIXES)


def is_sidecar(name: str) -> bool:
    """A per-image metadata file (`NAME.EXT.json` or `NAME.json`), not the folder defaults."""
    return name.lower().endswith(SIDECAR_SUFFIX) and name != DEFAULTS_NAME


def is_candidate_name(name: str) -> bool:
    """True for a file name the watcher may take (the last component only)."""
    return not (
        is_hidden(name)
        or is_temp(name)
        or name.lower().endswith(SIDECAR_SUFFIX)
        or name == DEFAULTS_NAME
    )


def relative_parts(root: str, path: str) -> list[str] | None:
    """`path`'s components below `root` (both absolute, normalised), or None if outside."""
    prefix = root.rstrip(os.sep) + os.sep
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split(os.sep)
    return parts if all(parts) else None


def is_candidate_path(root: str, path: str) -> bool:
    """A file below `root` with a candidate name and no hidden folder on the way."""
    parts = relative_parts(root, path)
    if not parts:
        return False
    return is_candidate_name(parts[-1]) and not any(is_hidden(p) for p in parts[:-1])
