"""Rows as an intake records them, for ledger tests that need files and not their
bytes: `n` distinct files under one root, each its own content."""

from __future__ import annotations

from reka_ingest.core.states import Origin
from reka_ingest.ledger.intake import NewFile


def new_files(n: int, *, seen_at: float, size: int = 10) -> list[NewFile]:
    """`0.jpg` … `n-1.jpg`, claimed at `/w/<name>`, each with its own sha256."""
    return [
        NewFile(
            path=f"{i}.jpg",
            source_root="/in",
            work_path=f"/w/{i}.jpg",
            origin=Origin.EVENT,
            size=size,
            mtime=1.0,
            sha256=f"{i:064x}",
            seen_at=seen_at,
        )
        for i in range(n)
    ]
