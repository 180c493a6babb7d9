"""Where bytes go once a file has an outcome, from claim folders shared by many files:
each image takes its own sidecar (a linked one too, unread) and nothing else, and a
claim folder goes once it is empty."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from reka_ingest.core.settings import Settings
from reka_ingest.files.outbox import file_done, file_failed, remove_empty_claim_folders


def test_files_sharing_a_claim_folder_each_take_their_own_sidecar_only(
    make_settings: Callable[..., Settings],
) -> None:
    ingest = make_settings().ingest
    folder = ingest.work_dir / "tag-abc"
    folder.mkdir(parents=True)
    for name, data in {
        "a.jpg": b"a",
        "a.json": b"{}",
        "b.jpg": b"b",
        "b.jpg.json": b"{}",
        "c.jpg": b"c",
    }.items():
        (folder / name).write_bytes(data)
    os.symlink("/etc/passwd", folder / "c.json")

    a = file_done(ingest, work_path=str(folder / "a.jpg"), rel_path="x/a.jpg", file_id=1)
    assert a == str(ingest.done_path / "x" / "a.jpg")
    assert sorted(os.listdir(ingest.done_path / "x")) == ["a.jpg", "a.json"]
    remove_empty_claim_folders(ingest, [str(folder / "a.jpg")])
    assert folder.is_dir()  # b and c are still in it

    file_done(ingest, work_path=str(folder / "b.jpg"), rel_path="x/b.jpg", file_id=2)
    assert sorted(os.listdir(ingest.done_path / "x")) == ["a.jpg", "a.json", "b.jpg", "b.jpg.json"]
    error_file = file_failed(
        ingest,
        work_path=str(folder / "c.jpg"),
        rel_path="c.jpg",
        file_id=3,
        reason="bad_sidecar",
        message="symbolic links are never followed",
    )
    assert error_file is not None
    assert json.loads(Path(error_file).read_text())["reason"] == "bad_sidecar"
    assert os.readlink(ingest.failed_path / "c.json") == "/etc/passwd"  # moved, never read
    remove_empty_claim_folders(ingest, [str(folder / "b.jpg"), str(folder / "c.jpg")])
    assert not folder.exists()
    assert ingest.work_dir.is_dir()  # never the work area itself


def test_a_done_folder_removed_under_a_running_worker_is_made_again(
    make_settings: Callable[..., Settings],
) -> None:
    ingest = make_settings().ingest
    folder = ingest.work_dir / "tag-def"
    folder.mkdir(parents=True)
    (folder / "1.jpg").write_bytes(b"1")
    (folder / "2.jpg").write_bytes(b"2")
    file_done(ingest, work_path=str(folder / "1.jpg"), rel_path="d/1.jpg", file_id=1)
    (ingest.done_path / "d" / "1.jpg").unlink()
    (ingest.done_path / "d").rmdir()  # someone tidied done/ by hand
    moved = file_done(ingest, work_path=str(folder / "2.jpg"), rel_path="d/2.jpg", file_id=2)
    assert moved is not None and Path(moved).read_bytes() == b"2"
