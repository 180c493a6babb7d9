"""An inbox that holds the service's own folders (or lies inside one) is refused
before anything is created or claimed: the watcher would take its own ledger, work
area and outbox as dropped files. An empty INGEST_INBOX is the current folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import load_settings
from scheduler.claim import check_same_filesystem

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("inbox", "data_dir", "extra"),
    [
        ("in", "in/var", {}),  # the data folder inside the inbox
        ("var/inbox", "var", {}),  # the inbox inside the data folder
        ("same", "same", {}),
        ("in", "var", {"done_dir": "in/done"}),
        ("in", "var", {"failed_dir": "in"}),
    ],
)
def test_overlapping_folders_are_refused_and_nothing_is_made(
    tmp_path: Path, inbox: str, data_dir: str, extra: dict[str, str]
) -> None:
    settings = load_settings(
        inbox=tmp_path / inbox,
        data_dir=tmp_path / data_dir,
        **{k: tmp_path / v for k, v in extra.items()},
    )
    with pytest.raises(SettingsError, match="overlap"):
        check_same_filesystem(settings.ingest)
    assert list(tmp_path.iterdir()) == []


def test_folders_side_by_side_are_taken(tmp_path: Path) -> None:
    settings = load_settings(inbox=tmp_path / "inbox", data_dir=tmp_path / "var")
    check_same_filesystem(settings.ingest)
    assert (tmp_path / "inbox").is_dir() and (tmp_path / "var" / "work").is_dir()


def test_an_empty_inbox_setting_in_a_folder_of_the_users_files_takes_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_"))}
    done = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "watch"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(REPO), "INGEST_INBOX": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "INGEST_INBOX (.) and INGEST_DATA_DIR (var) overlap" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
