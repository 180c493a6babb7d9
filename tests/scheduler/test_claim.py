"""Claiming by one atomic rename; hashing after the claim; symlinks never taken."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.files.hashing import sha256_of
from scheduler.claim import (
    ClaimFolders,
    check_same_filesystem,
    claim,
    claim_folder_name,
    inbox_tag,
    prune_claim_folders,
    rel_dir_of_claim,
)
from scheduler.describe import describe


def folders_in(work: Path, tag: str = "t") -> ClaimFolders:
    return ClaimFolders(str(work), tag)


def test_a_claim_moves_the_file_and_its_sidecar_into_one_claim_folder(tmp_path: Path) -> None:
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    (inbox / "sub").mkdir(parents=True)
    work.mkdir()
    src = inbox / "sub" / "p.jpg"
    src.write_bytes(b"bytes")
    side = inbox / "sub" / "p.jpg.json"
    side.write_text("{}")
    got = claim(str(src), rel_path="sub/p.jpg", folders=folders_in(work), sidecar=str(side))
    assert got is not None
    assert not src.exists() and not side.exists()
    folder = Path(got.work_path).parent
    assert folder.parent == work
    assert sorted(p.name for p in folder.iterdir()) == ["p.jpg", "p.jpg.json"]
    assert got.sidecar_path == str(folder / "p.jpg.json")
    assert rel_dir_of_claim(folder.name) == "sub"  # recovery can restore the folder


def drop(inbox: Path, rel: str, data: bytes = b"bytes") -> str:
    path = inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_claims_from_one_folder_share_a_claim_folder_until_a_name_could_clash(
    tmp_path: Path,
) -> None:
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    work.mkdir()
    folders = folders_in(work)

    def take(rel: str, sidecar: str | None = None) -> str:
        got = claim(drop(inbox, rel), rel_path=rel, folders=folders, sidecar=sidecar)
        assert got is not None
        return os.path.dirname(got.work_path)

    first = take("a/1.jpg")
    assert take("a/2.jpg") == first  # one mkdir for many files
    assert take("b/1.jpg") != first  # another relative folder, another claim folder
    assert take("a/1.png") != first  # could own 1.json, as 1.jpg could: never together
    again = take("a/1.jpg")  # the same name dropped again while the first waits
    assert again not in (first,)
    side = drop(inbox, "a/3.json", b"{}")
    with_sidecar = take("a/3.jpg", sidecar=side)
    assert sorted(os.listdir(with_sidecar)).count("3.json") == 1
    # In every claim folder each sidecar name belongs to at most one image.
    for folder in work.iterdir():
        stems = [os.path.splitext(n)[0] for n in os.listdir(folder) if not n.endswith(".json")]
        assert len(stems) == len(set(stems))


def test_a_claim_folder_holds_at_most_per_folder_claims(tmp_path: Path) -> None:
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    work.mkdir()
    folders = ClaimFolders(str(work), "t", per_folder=3)
    for i in range(7):
        assert claim(drop(inbox, f"{i}.jpg"), rel_path=f"{i}.jpg", folders=folders) is not None
    assert sorted(len(os.listdir(f)) for f in work.iterdir()) == [1, 3, 3]


def test_a_claim_folder_removed_once_empty_is_replaced_not_an_error(tmp_path: Path) -> None:
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    work.mkdir()
    folders = folders_in(work)
    got = claim(drop(inbox, "1.jpg"), rel_path="1.jpg", folders=folders)
    assert got is not None
    os.unlink(got.work_path)  # a worker moved it to done/ ...
    os.rmdir(os.path.dirname(got.work_path))  # ... and removed the empty folder
    again = claim(drop(inbox, "2.jpg"), rel_path="2.jpg", folders=folders)
    assert again is not None and os.path.exists(again.work_path)
    assert os.path.dirname(again.work_path) != os.path.dirname(got.work_path)


def test_pruning_removes_empty_claim_folders_of_this_inbox_only(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for name in ("t-empty", "t-open", "t-full", "other-empty"):
        (work / name).mkdir(parents=True)
    (work / "t-full" / "x.jpg").write_bytes(b"x")
    removed = prune_claim_folders(str(work), "t", keep={str(work / "t-open")})
    assert removed == 1
    assert sorted(p.name for p in work.iterdir()) == ["other-empty", "t-full", "t-open"]


def test_only_one_of_many_claimers_wins(tmp_path: Path) -> None:
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    inbox.mkdir()
    work.mkdir()
    src = inbox / "p.jpg"
    src.write_bytes(b"bytes")
    results: list[object] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        folders = folders_in(work)  # eight watchers, each with its own claim folders
        barrier.wait()
        results.append(claim(str(src), rel_path="p.jpg", folders=folders))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 8
    assert len(winners) == 1
    with_files = [p for p in work.iterdir() if any(p.iterdir())]
    assert with_files == [Path(winners[0].work_path).parent]  # type: ignore[attr-defined]
    # the losers' empty folders go at the next prune
    prune_claim_folders(str(work), "t", keep=set())
    assert list(work.iterdir()) == with_files


def test_claiming_a_file_that_is_gone_is_a_quiet_none(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    got = claim(
        str(tmp_path / "nope.jpg"), rel_path="nope.jpg", folders=folders_in(tmp_path / "work")
    )
    assert got is None


def test_hash_is_streamed_over_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk, not a multiple of it
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sha256_of(fd) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_describe_refuses_a_symlink_in_the_work_area(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jpg"
    target.write_bytes(b"secret")
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    new = describe(
        str(link),
        rel_path="link.jpg",
        source_root=str(tmp_path),
        origin=Origin.EVENT,
        seen_at=0.0,
        sidecar_path=None,
        defaults=None,
        max_image_bytes=1000,
    )
    assert new.reason == Reason.REFUSED_PATH
    assert new.sha256 is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", Reason.EMPTY_FILE), (b"x" * 11, Reason.TOO_LARGE)],
)
def test_describe_fails_files_that_can_never_upload(
    tmp_path: Path, content: bytes, reason: Reason
) -> None:
    path = tmp_path / "p.jpg"
    path.write_bytes(content)
    new = describe(
        str(path),
        rel_path="p.jpg",
        source_root=str(tmp_path),
        origin=Origin.EVENT,
        seen_at=0.0,
        sidecar_path=None,
        defaults=None,
        max_image_bytes=10,
    )
    assert new.reason == reason


def test_same_filesystem_check_passes_for_tmp_and_names_both_settings(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings().ingest
    check_same_filesystem(settings)
    real_stat = os.stat

    def fake_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)  # type: ignore[arg-type]
        if Path(str(path)) == settings.work_dir:
            fields = list(st)
            fields[2] = st.st_dev + 1  # st_dev
            return os.stat_result(fields)
        return st

    monkeypatch.setattr(os, "stat", fake_stat)
    with pytest.raises(SettingsError) as info:
        check_same_filesystem(settings)
    assert "INGEST_INBOX" in str(info.value)
    assert "INGEST_DATA_DIR" in str(info.value)


def test_claim_folder_names_carry_the_tag_and_a_safe_folder() -> None:
    tag = inbox_tag("/srv/inbox")
    assert tag == inbox_tag("/srv/inbox") != inbox_tag("/srv/other")
    name = claim_folder_name(tag, "cam 1/2024-01-01")
    assert name.startswith(f"{tag}-")
    assert rel_dir_of_claim(name) == "cam 1/2024-01-01"
    assert "." not in claim_folder_name(tag, "x" * 400)  # too long: left out
    assert rel_dir_of_claim(f"{tag}-abc.Li4vLi4vZXRj") == "etc"  # '../../etc' cannot climb
