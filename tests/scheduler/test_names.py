"""Which names the watcher takes and which it leaves alone."""

from __future__ import annotations

import pytest

from scheduler.names import is_candidate_name, is_candidate_path, is_sidecar, relative_parts

ROOT = "/srv/inbox"


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.jpg",
        "photo.jpg.tmp",
        "photo.JPG.PART",
        "photo.jpg.crdownload",
        "photo.jpg~",
        "_defaults.json",
        "photo.jpg.json",
        "photo.json",
    ],
)
def test_ignored_names(name: str) -> None:
    assert not is_candidate_name(name)


@pytest.mark.parametrize("name", ["photo.jpg", "IMG_0001.JPEG", "scan.png", "README", "a.tmp.jpg"])
def test_candidate_names(name: str) -> None:
    assert is_candidate_name(name)


def test_sidecars_are_json_but_not_the_defaults() -> None:
    assert is_sidecar("photo.jpg.json")
    assert is_sidecar("photo.JSON")
    assert not is_sidecar("_defaults.json")
    assert not is_sidecar("photo.jpg")


def test_hidden_folder_anywhere_on_the_path_hides_the_file() -> None:
    assert not is_candidate_path(ROOT, f"{ROOT}/.sync/photo.jpg")
    assert not is_candidate_path(ROOT, f"{ROOT}/a/.cache/b/photo.jpg")
    assert is_candidate_path(ROOT, f"{ROOT}/a/b/photo.jpg")


def test_paths_outside_the_root_are_not_candidates() -> None:
    assert not is_candidate_path(ROOT, "/srv/inbox2/photo.jpg")
    assert not is_candidate_path(ROOT, "/elsewhere/photo.jpg")
    assert not is_candidate_path(ROOT, ROOT)
    assert relative_parts(ROOT, f"{ROOT}/a/b.jpg") == ["a", "b.jpg"]
    assert relative_parts(ROOT, f"{ROOT}//b.jpg") is None
