"""Folder-derived metadata for one file: INGEST_PATH_METADATA applied, with its
mismatch rule (INGEST_PATH_METADATA_MISMATCH).

The pattern itself (`PathPattern`: parse, match) lives in
`reka_ingest.core.path_pattern`, where settings check it at start; this is the
scheduler's use of it. A file whose folders fit gets the captured values as a
metadata layer (below `_defaults.json` and the sidecar, above EXIF: see
`scheduler.sidecar`); one that does not fit fails alone with `path_mismatch`
(`fail`, the default) or is sent without the folder keys (`omit`).
"""

from __future__ import annotations

from dataclasses import dataclass

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.logs import get_logger
from reka_ingest.core.path_pattern import PathPattern, folders
from reka_ingest.core.settings import PathMismatch
from reka_ingest.core.states import Reason
from reka_ingest.core.text import shown

__all__ = ["FolderMetadata", "PathPattern"]

log = get_logger(__name__)

SETTING = "INGEST_PATH_METADATA"


@dataclass(frozen=True, slots=True)
class FolderMetadata:
    """The pattern (None: no folder metadata) and what a file that does not fit gets."""

    pattern: PathPattern | None = None
    on_mismatch: PathMismatch = PathMismatch.FAIL

    @classmethod
    def parse(cls, text: str | None, on_mismatch: PathMismatch) -> FolderMetadata:
        if text is None or not text.strip():
            return cls(None, on_mismatch)
        return cls(PathPattern.parse(text), on_mismatch)

    def values(self, rel_dir: str) -> dict[str, str]:
        """The keys `rel_dir`'s folders give; {} when there is no pattern, or when
        they do not fit and the rule is `omit`; `FileRejected(path_mismatch)` when
        they do not fit and the rule is `fail`."""
        if self.pattern is None:
            return {}
        found = self.pattern.match(rel_dir)
        if found is not None:
            return found
        why = self.pattern.why_not(rel_dir) or "does not fit"
        where = shown("/".join(folders(rel_dir))) or "(none: it sits at the top)"
        if self.on_mismatch is PathMismatch.OMIT:
            log.debug("describe.path_mismatch_omitted", folders=where, why=why)
            return {}
        raise FileRejected(
            Reason.PATH_MISMATCH,
            f"its folders {where!r} do not fit {SETTING} {self.pattern.text!r}: {why}",
        )
