"""INGEST_INCLUDE / INGEST_EXCLUDE: rclone's glob rules (a table, a property), and
what the real watcher and `scan` do with the files they leave out: left in place
with their sidecars, recorded once as `excluded`, counted by `status`, taken
normally once the rules change."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from typer.testing import CliRunner

from reka_ingest.cli import watch_status
from reka_ingest.cli.main import app
from reka_ingest.cli.status import status_json
from reka_ingest.core.errors import SettingsError
from reka_ingest.core.globs import GlobError, compile_glob, escape
from reka_ingest.core.settings import IngestSettings, Settings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.files.filters import PathFilter
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import summary
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.collector import IngestCollector, build_registry
from reka_ingest.metrics.counters import redis_client
from scheduler.backfill import backfill, count_files
from scheduler.watcher import Watcher
from tests.metrics.support import samples, value
from tests.scheduler.conftest import files_by_path, wait_for
from tests.support.images import write_image

# --- the rules ---------------------------------------------------------------------

# (include, exclude, path, the rule that leaves it out or None when taken)
CASES: list[tuple[list[str], list[str], str, str | None]] = [
    # rclone's own examples (filtering.md): no leading `/` = the name or the path tail
    ([], ["file.jpg"], "file.jpg", 'INGEST_EXCLUDE "file.jpg"'),
    ([], ["file.jpg"], "directory/file.jpg", 'INGEST_EXCLUDE "file.jpg"'),
    ([], ["file.jpg"], "afile.jpg", None),
    ([], ["file.jpg"], "directory/afile.jpg", None),
    ([], ["/file.jpg"], "file.jpg", 'INGEST_EXCLUDE "/file.jpg"'),
    ([], ["/file.jpg"], "directory/file.jpg", None),
    ([], ["*.jpg"], "dir/sub/file.jpg", 'INGEST_EXCLUDE "*.jpg"'),
    ([], ["/*.jpg"], "file2.jpg", 'INGEST_EXCLUDE "/*.jpg"'),
    ([], ["/*.jpg"], "dir/file.jpg", None),  # `*` stays within one segment
    ([], ["*.{jpg,png}"], "dir/file.png", 'INGEST_EXCLUDE "*.{jpg,png}"'),
    ([], ["*.{jpg,png}"], "dir/file.gif", None),
    ([], ["dir/**"], "dir/anyfile", 'INGEST_EXCLUDE "dir/**"'),
    ([], ["dir/**"], "subdir/dir/subsubdir/anyfile", 'INGEST_EXCLUDE "dir/**"'),
    ([], ["dir/**"], "subdir/file.png", None),
    ([], ["dir/**"], "adir/file.png", None),  # a whole segment, not a suffix of one
    ([], ["*.t?t"], "dir/file.tzt", 'INGEST_EXCLUDE "*.t?t"'),
    ([], ["*.t?t"], "file.png", None),
    ([], ["a?b"], "a/b", None),  # `?` is never `/`
    ([], ["*.[a-z]"], "dir/file.b", 'INGEST_EXCLUDE "*.[a-z]"'),
    ([], ["*.[a-z]"], "file.0", None),
    ([], ["*.[!a-z]"], "file.0", 'INGEST_EXCLUDE "*.[!a-z]"'),
    ([], ["a[!x]b"], "a/b", None),  # a negated class is never `/` either
    ([], ["*.[[:digit:]]"], "f.7", 'INGEST_EXCLUDE "*.[[:digit:]]"'),
    ([], ["*.\\?\\?\\?"], "dir/file.???", 'INGEST_EXCLUDE "*.\\?\\?\\?"'),
    ([], ["*.\\?\\?\\?"], "file.abc", None),
    ([], ["*.\\d\\d\\d"], "dir/file.345", 'INGEST_EXCLUDE "*.\\d\\d\\d"'),
    ([], ["*.\\d\\d\\d"], "file.def", None),
    ([], ["*\\[{JP,KR}\\]*"], "x [KR] y.jpg", 'INGEST_EXCLUDE "*\\[{JP,KR}\\]*"'),
    ([], ["a**"], "ab/c/d.jpg", 'INGEST_EXCLUDE "a**"'),  # `**` crosses folders anywhere
    ([], ["/a/**/z.jpg"], "a/b/c/z.jpg", 'INGEST_EXCLUDE "/a/**/z.jpg"'),
    ([], ["{raw,tmp}/**"], "x/tmp/y.jpg", 'INGEST_EXCLUDE "{raw,tmp}/**"'),
    ([], ["cache/"], "x/cache/y.jpg", 'INGEST_EXCLUDE "cache/"'),  # a folder: dir/**
    ([], ["*.jpg"], "new\nline.jpg", 'INGEST_EXCLUDE "*.jpg"'),  # a newline in a name
    # includes: anything not included is left out; an exclude wins over an include
    (["*.jpg"], [], "a/b.jpg", None),
    (["*.jpg"], [], "a/b.png", 'INGEST_INCLUDE (matches none of "*.jpg")'),
    (["*.jpg", "/keep/**"], [], "keep/x.png", None),
    (["*.jpg"], ["*.thumb.jpg"], "a/b.thumb.jpg", 'INGEST_EXCLUDE "*.thumb.jpg"'),
    (["/cam/**"], ["/cam/junk/**"], "cam/junk/a.jpg", 'INGEST_EXCLUDE "/cam/junk/**"'),
    (["/cam/**"], ["/cam/junk/**"], "cam/ok/a.jpg", None),
    # names that are not UTF-8 (lone surrogates, as os.fsdecode gives them)
    ([], ["caf?.jpg"], "caf\udce9.jpg", 'INGEST_EXCLUDE "caf?.jpg"'),
    (["*.jpg"], [], "\udcff\udcfe.jpg", None),
]


@pytest.mark.parametrize(("include", "exclude", "path", "rule"), CASES)
def test_rclone_rules(include: list[str], exclude: list[str], path: str, rule: str | None) -> None:
    f = PathFilter(include=include, exclude=exclude)
    assert f.active
    assert f.excluded_by(path) == rule


def test_no_rules_take_everything() -> None:
    f = PathFilter()
    assert not f.active and not f.prunes
    assert f.excluded_by("any/thing.jpg") is None


@pytest.mark.parametrize(
    ("exclude", "folder", "rule"),
    [
        ("/raw/**", "raw", 'INGEST_EXCLUDE "/raw/**"'),
        ("/raw/**", "x/raw", None),
        ("raw/**", "x/raw", 'INGEST_EXCLUDE "raw/**"'),
        ("raw/", "x/raw", 'INGEST_EXCLUDE "raw/"'),
        ("{a,b}/**", "b", 'INGEST_EXCLUDE "{a,b}/**"'),
        ("**", "anything", 'INGEST_EXCLUDE "**"'),
        ("*.jpg", "x.jpg", None),  # not a folder rule: files judged one by one
        ("{a,b/**}", "b", None),
    ],
)
def test_folders_left_out_whole(exclude: str, folder: str, rule: str | None) -> None:
    f = PathFilter(include=["*.jpg"], exclude=[exclude])
    assert f.pruned_by(folder) == rule
    if rule is not None:  # sound: every path below it is excluded by that rule
        assert f.excluded_by(f"{folder}/deep/er/x.jpg") == rule


def test_pruned_folder_is_the_top_one() -> None:
    f = PathFilter(exclude=["raw/**"])
    assert f.pruned_folder("a/raw/b/raw/c.jpg") == ("a/raw", 'INGEST_EXCLUDE "raw/**"')
    assert f.pruned_folder("a/b/c.jpg") is None


@pytest.mark.parametrize(
    ("glob", "why"),
    [
        ("***", "too many stars"),
        ("[ab", "mismatched '['"),
        ("ab]", "mismatched ']'"),
        ("{a,b", "mismatched '{'"),
        ("a}", "mismatched '{'"),
        ("[]", "empty character class"),
        ("[z-a]", "bad glob"),
        ("[[:nope:]]", "unknown character class"),
        ("{{jpe?g}}", "not supported"),
        ("x\\", "trailing"),
    ],
)
def test_bad_globs_are_refused(glob: str, why: str) -> None:
    with pytest.raises(GlobError, match=why.replace("[", "\\[").replace("{", "\\{")):
        compile_glob(glob)


def test_a_bad_glob_is_a_settings_error_naming_the_variable(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGEST_EXCLUDE", "*.tmp,raw/***")
    with pytest.raises(
        SettingsError, match=r"INGEST_EXCLUDE: .*too many stars in glob 'raw/\*\*\*'"
    ):
        make_settings()
    monkeypatch.delenv("INGEST_EXCLUDE")
    monkeypatch.setenv("INGEST_INCLUDE", '["*.{jpg,png}", "[a-"]')
    with pytest.raises(SettingsError, match=r"INGEST_INCLUDE: .*mismatched"):
        make_settings()
    monkeypatch.setenv("INGEST_INCLUDE", "*.{jpg,png},/cam/**")
    assert make_settings().ingest.include == ["*.{jpg,png}", "/cam/**"]


_NAME_BYTES = st.binary(min_size=1, max_size=24).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
)
_GLOBS = [
    "*",
    "**",
    "?",
    "*.jpg",
    "/*.jpg",
    "[!a-z]*",
    "*.{jpg,png}",
    "raw/**",
    "\\d*",
    "[[:punct:]]*",
]


@settings(max_examples=300, deadline=None)
@given(folder=_NAME_BYTES, name=_NAME_BYTES, globs=st.lists(st.sampled_from(_GLOBS)))
def test_any_name_never_crashes_and_its_escaped_literal_matches_it(
    folder: bytes, name: bytes, globs: list[str]
) -> None:
    rel_folder, rel_name = os.fsdecode(folder), os.fsdecode(name)
    rel = f"{rel_folder}/{rel_name}"
    PathFilter(include=globs, exclude=globs).excluded_by(rel)
    PathFilter(include=globs).pruned_folder(rel)
    whole = PathFilter(exclude=["/" + escape(rel)])
    assert whole.excluded_by(rel) == f'INGEST_EXCLUDE "/{escape(rel)}"'
    assert PathFilter(exclude=[escape(rel_name)]).excluded_by(rel) is not None  # the tail
    assert PathFilter(include=["/" + escape(rel)]).excluded_by(rel) is None
    # anchored at the root: the same name one folder down is another path
    assert whole.excluded_by(f"x/{rel}") is None


# --- the watcher ----------------------------------------------------------------------

RULES: dict[str, Any] = {"include": ["*.jpg"], "exclude": ["*.thumb.jpg", "/private/**"]}


def no_enqueue(_batch_id: int) -> None:
    """Batches stay queued in the ledger; these tests look at intake only."""


def _tree(inbox: Path) -> None:
    write_image(inbox / "a.jpg", seed=1)
    write_image(inbox / "cam" / "b.jpg", seed=2)
    write_image(inbox / "cam" / "b.thumb.jpg", seed=3)
    (inbox / "cam" / "b.thumb.jpg.json").write_text(json.dumps({"caption": "thumb"}))
    write_image(inbox / "notes.png", seed=4)
    write_image(inbox / "private" / "x.jpg", seed=5)
    write_image(inbox / "private" / "deep" / "y.jpg", seed=6)
    (inbox / "private" / "y.json").write_text("{}")  # no image: but never looked at


EXCLUDED = {
    "cam/b.thumb.jpg": 'INGEST_EXCLUDE "*.thumb.jpg"',
    "notes.png": 'INGEST_INCLUDE (matches none of "*.jpg")',
    "private/": 'INGEST_EXCLUDE "/private/**"',
}


def _excluded_rows(ledger: Ledger) -> dict[str, File]:
    return {p: f for p, f in files_by_path(ledger).items() if f.state == FileState.EXCLUDED}


def _check_excluded(ledger: Ledger, inbox: Path) -> None:
    rows = _excluded_rows(ledger)
    assert set(rows) == set(EXCLUDED)
    for path, rule in EXCLUDED.items():
        row = rows[path]
        assert row.reason == Reason.EXCLUDED
        assert row.message == f"left in place by {rule}"
        assert row.sha256 is None and row.batch_id is None and row.finished_at is None
        assert row.work_path == str((inbox / path).resolve()).rstrip("/")
        assert row.source_root == str(inbox.resolve())


def _still_in_place(inbox: Path) -> None:
    for rel in (
        "cam/b.thumb.jpg",
        "cam/b.thumb.jpg.json",
        "notes.png",
        "private/x.jpg",
        "private/deep/y.jpg",
        "private/y.json",
    ):
        assert (inbox / rel).is_file(), rel


def test_the_watcher_leaves_excluded_files_in_place_and_records_each_once(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(scan_interval=0.3, orphan_sidecar_after=0.5, **RULES)
    inbox = settings.inbox
    _tree(inbox)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: {"a.jpg", "cam/b.jpg"} <= set(files_by_path(ledger)))
        wait_for(lambda: len(_excluded_rows(ledger)) == 3)
        # new ones while running: by event (and in a folder left out whole: its row says so).
        # Written as a scan ends: the next (0.3 s on) must not find them before their
        # events do (which come within inotify's 20 ms gathering and one tick).
        done = watcher.stats.scans
        wait_for(lambda: watcher.stats.scans > done)
        write_image(inbox / "cam" / "c.thumb.jpg", seed=7)
        write_image(inbox / "private" / "new.jpg", seed=8)
        wait_for(lambda: "cam/c.thumb.jpg" in _excluded_rows(ledger))
        scans = watcher.stats.scans
        wait_for(lambda: watcher.stats.scans >= scans + 4)  # rescans, past the orphan bound
        assert watcher.exclusions.recorded == 4
        # its sidecar stays with it, and is not looked at again at each scan
        assert str(inbox.resolve() / "cam" / "b.thumb.jpg.json") not in watcher._sidecars
    rows = files_by_path(ledger)
    assert rows["a.jpg"].state == FileState.QUEUED
    assert rows["cam/b.jpg"].state == FileState.QUEUED
    assert rows["cam/c.thumb.jpg"].origin == Origin.EVENT
    assert rows["cam/b.thumb.jpg"].origin == Origin.SCAN
    assert len(rows) == 6  # 2 taken + 4 excluded: no orphan sidecar, nothing twice
    assert not (inbox / "a.jpg").exists()
    _still_in_place(inbox)
    assert (inbox / "cam" / "c.thumb.jpg").is_file()
    assert (inbox / "private" / "new.jpg").is_file()
    assert not list(settings.failed_path.rglob("*.error.json"))

    # A restart: the rows are read back, nothing is recorded again.
    again = Watcher(settings, ledger, no_enqueue)
    with running(again):
        wait_for(lambda: again.stats.scans >= 2)
    assert again.exclusions.recorded == 0 and again.exclusions.forgotten == 0
    assert len(files_by_path(ledger)) == 6
    _still_in_place(inbox)


def test_excluded_files_are_counted_by_status_and_metrics(
    fast_settings: Callable[..., IngestSettings],
    ledger: Ledger,
    running: Any,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = fast_settings(redis_url=redis_url, **RULES)
    _tree(settings.inbox)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: len(files_by_path(ledger)) == 5)
    now = time.time()
    s = summary(ledger, now=now)
    assert s.files["excluded"] == 3 and s.files["queued"] == 2
    assert s.finished_last_minute == 0  # left out is not worked through: no rate
    data = status_json(s, now)
    assert data["files"]["excluded"] == 3
    assert data["throughput_per_second"] is None
    snap = watch_status.take_snapshot(ledger, None, now=now)
    assert snap.active == 2  # not final: the queued ones only
    assert snap.oldest_active_age is not None
    for name, val in {
        "INGEST_DATA_DIR": str(settings.data_dir),
        "INGEST_INBOX": str(settings.inbox),
        "INGEST_DATABASE_URL": settings.ledger_url,
        "INGEST_REDIS_URL": redis_url,
        "INGEST_LOG_FORMAT": "console",
    }.items():
        monkeypatch.setenv(name, val)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"]["excluded"] == 3
    text = CliRunner().invoke(app, ["status"]).output
    assert "excluded   3" in text
    listed = CliRunner().invoke(app, ["files", "--state", "excluded", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(r["path"] for r in json.loads(listed.output)) == sorted(EXCLUDED)
    client = redis_client(redis_url)
    try:
        page = generate_latest(build_registry(IngestCollector(ledger, client, clock=time.time)))
    finally:
        client.close()
    assert value(samples(page.decode()), "reka_ingest_files", state="excluded") == 3
    # not the oldest active file: that is a queued one
    oldest = value(samples(page.decode()), "reka_ingest_oldest_active_file_age_seconds")
    assert oldest < 60


def test_a_file_taken_after_the_rules_change_supersedes_its_excluded_row(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(**RULES)
    inbox = settings.inbox
    _tree(inbox)
    with running(Watcher(settings, ledger, no_enqueue)):
        wait_for(lambda: len(files_by_path(ledger)) == 5)
    # Thumbnails and the private folder are taken now; PNGs are still left out.
    changed = fast_settings(include=["*.jpg"], exclude=[])
    watcher = Watcher(changed, ledger, no_enqueue)
    with running(watcher):
        wait_for(
            lambda: (
                {"cam/b.thumb.jpg", "private/x.jpg", "private/deep/y.jpg"}
                <= set(files_by_path(ledger))
            )
        )
    assert watcher.exclusions.forgotten == 2  # the thumbnail's row and the folder's
    rows = files_by_path(ledger)
    assert set(_excluded_rows(ledger)) == {"notes.png"}
    thumb = rows["cam/b.thumb.jpg"]
    assert thumb.state == FileState.QUEUED and thumb.sha256 is not None
    assert thumb.sidecar == {"caption": "thumb"}  # its sidecar went with it
    assert not (inbox / "cam" / "b.thumb.jpg").exists()
    assert rows["private/x.jpg"].state == FileState.QUEUED
    assert "private/" not in rows
    assert (inbox / "notes.png").is_file()


# --- scan / backfill ------------------------------------------------------------------


def test_scan_records_excluded_files_in_place_once_and_takes_them_after_a_change(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    settings = fast_settings(min_file_age=0.0, **RULES)
    root = tmp_path / "archive"
    _tree(root)
    before = sorted(root.rglob("*"))
    assert count_files(root, PathFilter.from_settings(settings)) == 4  # private/ not walked
    sent: list[int] = []
    first = backfill(settings, ledger, root, sent.append)
    assert (first.found, first.recorded, first.queued, first.excluded) == (4, 5, 2, 3)
    assert sorted(root.rglob("*")) == before
    _check_excluded(ledger, root)
    assert all(f.origin == Origin.BACKFILL for f in _excluded_rows(ledger).values())
    assert not list(settings.failed_path.rglob("*.error.json"))

    again = backfill(settings, ledger, root, sent.append)
    assert (again.recorded, again.excluded, again.already_known) == (0, 0, 4)
    assert len(files_by_path(ledger)) == 5

    changed = fast_settings(min_file_age=0.0, include=["*.jpg"], exclude=["/private/deep/"])
    third = backfill(changed, ledger, root, sent.append)
    rows = files_by_path(ledger)
    assert rows["cam/b.thumb.jpg"].state == FileState.QUEUED
    assert rows["cam/b.thumb.jpg"].work_path == str((root / "cam" / "b.thumb.jpg").resolve())
    assert rows["private/x.jpg"].state == FileState.QUEUED
    assert set(_excluded_rows(ledger)) == {"notes.png", "private/deep/"}
    assert (third.recorded, third.excluded) == (3, 1)
    assert sorted(root.rglob("*")) == before


def test_the_scan_command_counts_excluded_files(
    fast_settings: Callable[..., IngestSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fast_settings(min_file_age=0.0)
    for name, val in {
        "INGEST_DATA_DIR": settings.data_dir,
        "INGEST_INBOX": settings.inbox,
        "INGEST_MIN_FILE_AGE": "0",
        "INGEST_INCLUDE": "*.jpg",
        "INGEST_EXCLUDE": '["*.thumb.jpg", "/private/**"]',
    }.items():
        monkeypatch.setenv(name, str(val))
    root = tmp_path / "archive"
    _tree(root)
    result = CliRunner().invoke(app, ["scan", str(root), "--no-enqueue"])
    assert result.exit_code == 0, result.output
    assert "excluded:    3 (left in place" in result.output
    led = open_ledger(settings.ledger_url)
    try:
        _check_excluded(led, root)
    finally:
        led.dispose()
