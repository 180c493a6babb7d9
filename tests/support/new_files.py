"""Rows as an intake records them, for ledger tests that need files and not their
bytes: distinct files under one root, each its own content; or raw rows of
`files`, for tests that write the table directly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger.intake import NewFile


def new_files(sizes: Sequence[int], *, seen_at: float) -> list[NewFile]:
    """`0.jpg`, `1.jpg`, … of these sizes, claimed at `/w/<name>`, each with its own sha256."""
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
        for i, size in enumerate(sizes)
    ]


def file_row(i: int, **values: Any) -> dict[str, Any]:
    """A row of `files` for an INSERT of the table itself: `f<i>.jpg`, a duplicate
    with the columns no row is without, then `values` over them."""
    return {
        "path": f"f{i}.jpg",
        "source_root": "/in",
        "work_path": f"/work/f{i}.jpg",
        "origin": Origin.EVENT,
        "size": 1,
        "mtime": 1.0,
        "state": FileState.DUPLICATE,
        "seen_at": 1.0,
        "updated_at": 1.0,
        **values,
    }
