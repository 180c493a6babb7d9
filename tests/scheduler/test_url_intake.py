"""Image URL lists through the real Watcher: one row per URL line, a bad line failing
alone, a repeated URL a duplicate, the list itself to done/ or failed/, and a long
list read in bounded memory. A real ledger (SQLite and PostgreSQL); `enqueue` is a
list's `append`."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.core.logs import configure_logging
from reka_ingest.core.settings import IngestSettings, LogFormat
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.files.manifests import normalise_url, url_identity
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import Batch, File
from scheduler.backfill import backfill
from scheduler.claim import ClaimFolders, claim, inbox_tag
from scheduler.url_intake import line_work_path
from scheduler.watcher import Watcher
from tests.scheduler.conftest import wait_for
from tests.support.images import write_image


def _rows(ledger: Ledger) -> list[File]:
    return list(list_files(ledger))


def _url_rows(ledger: Ledger) -> dict[int, File]:
    """URL rows by their line number (one manifest in play)."""
    return {int(f.work_path.rsplit("#L", 1)[1]): f for f in _rows(ledger) if f.origin == Origin.URL}


def _batches(ledger: Ledger) -> list[set[str]]:
    """The kinds of rows in each batch."""
    with ledger.read() as s:
        rows = s.execute(select(File.batch_id, File.origin).where(File.batch_id.is_not(None)))
        kinds: dict[int, set[str]] = {}
        for batch_id, origin in rows:
            kinds.setdefault(batch_id or 0, set()).add("url" if origin == Origin.URL else "file")
    return list(kinds.values())


def _gone(path: Path) -> Callable[[], bool]:
    return lambda: not path.exists()


def test_url_list_rows_bad_line_duplicate_and_reason_file(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    manifest = settings.inbox / "lists" / "day1.urls"
    manifest.parent.mkdir(parents=True)
    with running(watcher):
        write_image(settings.inbox / "lists" / "photo.jpg", seed=1)
        manifest.write_bytes(
            b"# archive\r\n"
            b"http://img.example/a.jpg\r\n"
            b"not a url\r\n"
            b"\r\n"
            b"HTTP://IMG.example:80/a.jpg#again\r\n"
            b"https://img.example/b%7e.jpg\r\n"
        )
        wait_for(_gone(manifest))
        wait_for((settings.failed_path / "lists" / "day1.urls").exists)
        wait_for(lambda: len(_url_rows(ledger)) == 4 and bool(sent))
        wait_for(lambda: not watcher.manifests and len(_batches(ledger)) == 2)
    rows = _url_rows(ledger)
    assert sorted(rows) == [2, 3, 5, 6]
    first = rows[2]
    assert (first.state, first.origin, first.size) == (FileState.QUEUED, Origin.URL, 0)
    assert first.path == "http://img.example/a.jpg"
    assert first.sha256 == url_identity("http://img.example/a.jpg")
    assert first.source_root == os.path.join(os.path.realpath(settings.inbox), "lists/day1.urls")
    bad = rows[3]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.BAD_URL)
    assert bad.message is not None
    assert "lists/day1.urls line 3" in bad.message
    assert "not an http(s) URL" in bad.message
    again = rows[5]
    assert (again.state, again.duplicate_of) == (FileState.DUPLICATE, first.id)
    assert again.message == f"same URL as file {first.id}"
    assert rows[6].state == FileState.QUEUED
    assert rows[6].sha256 == url_identity(normalise_url("https://img.example/b~.jpg"))
    # Homogeneous batches: the image apart from the URLs.
    assert sorted(sorted(k) for k in _batches(ledger)) == [["file"], ["url"]]
    # The list itself: failed/ with the bad line named; no row of its own.
    reason = json.loads(
        (settings.failed_path / "lists" / "day1.urls.error.json").read_text("utf-8")
    )
    assert reason["reason"] == "bad_url"
    assert reason["file_id"] is None  # the list has no row of its own (its lines have)
    assert reason["bad_lines_total"] == 1
    assert reason["bad_lines"] == [
        {"line": 3, "reason": "bad_url", "url": "not a url", "why": bad.message.split(": ", 1)[1]}
    ]
    assert "line 3" in reason["message"]
    assert not any(f.path == "lists/day1.urls" for f in _rows(ledger))
    # No reason file per URL line; in the work area only the image waiting for its upload.
    assert sorted(p.name for p in settings.failed_path.rglob("*")) == [
        "day1.urls",
        "day1.urls.error.json",
        "lists",
    ]
    assert [p.name for p in settings.work_dir.rglob("*") if p.is_file()] == ["photo.jpg"]


def test_csv_metadata_over_defaults_and_a_bad_cell(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    watcher = Watcher(settings, ledger, lambda _b: None)
    folder = settings.inbox / "site"
    folder.mkdir()
    (folder / "_defaults.json").write_text('{"site_id": "lot-7", "camera_id": "default"}')
    manifest = folder / "cams.urls.csv"
    with running(watcher):
        manifest.write_text(
            "url,camera_id,recorded_timestamp_utc,index,notes\n"
            "http://h/1.jpg,cam-1,1700000000,false,first\n"
            "http://h/2.jpg,,,,\n"
            "http://h/3.jpg,cam-3,yesterday,,\n"
            'http://h/4.jpg,cam-4,,,"x"\n',
            encoding="utf-8",
        )
        wait_for(_gone(manifest))
        wait_for(lambda: len(_url_rows(ledger)) == 4 and not watcher.manifests)
    rows = _url_rows(ledger)
    assert rows[2].sidecar == {
        "site_id": "lot-7",
        "camera_id": "cam-1",
        "recorded_timestamp_utc": 1700000000,
        "notes": "first",
    }
    assert rows[2].index_flag is False
    assert rows[3].sidecar == {"site_id": "lot-7", "camera_id": "default"}
    assert rows[3].index_flag is True
    assert (rows[4].state, rows[4].reason) == (FileState.FAILED, Reason.BAD_SIDECAR)
    assert "not a whole number" in (rows[4].message or "")
    assert rows[5].sidecar == {"site_id": "lot-7", "camera_id": "cam-4", "notes": "x"}
    assert (settings.failed_path / "site" / "cams.urls.csv.error.json").exists()


def test_bad_metadata_fails_its_row_with_bad_sidecar(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    watcher = Watcher(settings, ledger, lambda _b: None)
    manifest = settings.inbox / "m.urls.csv"
    with running(watcher):
        manifest.write_text(
            'url,detection_metadata\nhttp://h/1.jpg,"[1]"\nhttp://h/2.jpg,\n', encoding="utf-8"
        )
        wait_for(_gone(manifest))
        wait_for(lambda: len(_url_rows(ledger)) == 2 and not watcher.manifests)
    rows = _url_rows(ledger)
    assert (rows[2].state, rows[2].reason) == (FileState.FAILED, Reason.BAD_SIDECAR)
    assert "m.urls.csv line 2" in (rows[2].message or "")
    assert rows[3].state == FileState.QUEUED


def test_same_url_in_a_later_list_is_a_duplicate_and_a_good_list_goes_to_done(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    watcher = Watcher(settings, ledger, lambda _b: None)
    with running(watcher):
        (settings.inbox / "one.urls").write_text("http://h/x.jpg\nhttp://h/y.jpg\n")
        wait_for((settings.done_path / "one.urls").exists)
        (settings.inbox / "two.URLS").write_text("http://H/x.jpg\n")
        wait_for((settings.done_path / "two.URLS").exists)
    rows = [f for f in _rows(ledger) if f.origin == Origin.URL]
    assert [f.state for f in rows] == [FileState.QUEUED, FileState.QUEUED, FileState.DUPLICATE]
    assert rows[2].duplicate_of == rows[0].id
    assert not settings.failed_path.exists() or not any(settings.failed_path.iterdir())


def test_an_unusable_list_fails_whole_with_a_row_of_its_own(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    watcher = Watcher(settings, ledger, lambda _b: None)
    with running(watcher):
        (settings.inbox / "nourl.urls.csv").write_text("camera_id\ncam-1\n")
        (settings.inbox / "empty.urls").write_text("# nothing yet\n\n")
        (settings.inbox / "binary.urls").write_bytes(b"\x00\x01\x02" * 10)
        for name in ("nourl.urls.csv", "empty.urls", "binary.urls"):
            wait_for((settings.failed_path / f"{name}.error.json").exists)
    rows = {f.path: f for f in _rows(ledger)}
    assert (rows["nourl.urls.csv"].state, rows["nourl.urls.csv"].reason) == (
        FileState.FAILED,
        Reason.UNSUPPORTED_FORMAT,
    )
    assert "no 'url' column" in (rows["nourl.urls.csv"].message or "")
    assert rows["empty.urls"].reason == Reason.EMPTY_FILE
    assert rows["binary.urls"].reason == Reason.UNSUPPORTED_FORMAT
    assert all(f.origin != Origin.URL for f in rows.values())


def test_a_list_claimed_before_a_crash_is_read_again_without_repeats(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    root = os.path.realpath(settings.inbox)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    src = settings.inbox / "crash.urls"
    src.write_text("http://h/1.jpg\nhttp://h/2.jpg\nhttp://h/3.jpg\n")
    folders = ClaimFolders(os.path.realpath(settings.work_dir), inbox_tag(root))
    claimed = claim(str(src), rel_path="crash.urls", folders=folders)
    assert claimed is not None
    # The crash came after line 1's row was written.
    record_files(
        ledger,
        [
            NewFile(
                path="http://h/1.jpg",
                source_root=os.path.join(root, "crash.urls"),
                work_path=line_work_path(claimed.work_path, 1),
                origin=Origin.URL,
                size=0,
                mtime=0.0,
                sha256=url_identity("http://h/1.jpg"),
                seen_at=1.0,
            )
        ],
        now=1.0,
    )
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    with running(watcher):
        wait_for((settings.done_path / "crash.urls").exists)
        wait_for(lambda: not watcher.manifests)
    rows = _url_rows(ledger)
    assert sorted(rows) == [1, 2, 3]
    assert all(f.state == FileState.QUEUED for f in rows.values())
    with ledger.read() as s:
        assert s.scalar(select(func.count()).select_from(File)) == 3
        assert s.scalar(select(func.count()).select_from(File).where(File.batch_id.is_(None))) == 0
        assert (s.scalar(select(func.count()).select_from(Batch)) or 0) >= 1


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Streaming is what this is about, not the ledger: SQLite only (recording the rows is
# the cost, about half a millisecond each).
LONG_LIST = 20_000  # lines; a list of their rows would take about 20 MB
WARM_UP = 2_000  # lines of a first list, before the memory is measured
GROWTH_BOUND = 6 * 1024 * 1024  # bytes: 30% of that list, as 30 MB was of 100,000 lines


def _write_list(settings: IngestSettings, name: str, lines: int, first: int) -> Path:
    """A URL list written beside the inbox's `name` as a hidden part file (not yet
    seen), returned for the caller to rename into place."""
    tmp = settings.inbox / f".{name}.part"
    with tmp.open("w", encoding="utf-8") as fh:
        for i in range(first, first + lines):
            fh.write(f"https://images.example.com/archive/2024/{i:08d}.jpg\n")
    return tmp


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_long_list_streams_in_bounded_memory(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    """A list of 20,000 lines: every row recorded and batched, and the process's
    memory (sampled while the watcher reads) grows by far less than a list of their
    rows (about 20 MB) would take. The growth is measured from after a first, short
    list has gone the same way (warming the caches, the connection and the
    allocator's arenas), so what remains is what grows with the length: a slice at a
    time holds a group of 500 rows and a batch of 100, whatever the list's length
    (100,000 lines grew as little as this)."""
    settings = fast_settings(batch_max_files=100, batch_max_wait=30.0)
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    warm = _write_list(settings, "warm.urls", WARM_UP, first=LONG_LIST)
    big = _write_list(settings, "big.urls", LONG_LIST, first=0)
    peak = base = 0

    def done(name: str) -> Callable[[], bool]:
        def check() -> bool:
            nonlocal peak
            peak = max(peak, _rss())
            return (settings.done_path / name).exists()

        return check

    with running(watcher):
        os.rename(warm, settings.inbox / "warm.urls")
        wait_for(done("warm.urls"), timeout=60)
        peak = base = _rss()
        os.rename(big, settings.inbox / "big.urls")
        wait_for(done("big.urls"), timeout=160)
    with ledger.read() as s:
        count = s.scalar(select(func.count()).select_from(File).where(File.origin == Origin.URL))
        unbatched = s.scalar(select(func.count()).select_from(File).where(File.batch_id.is_(None)))
    assert count == LONG_LIST + WARM_UP
    assert unbatched == 0
    assert len(sent) == (LONG_LIST + WARM_UP) // 100
    print(f"grew {(peak - base) / 1e6:.1f} MB over {LONG_LIST} lines")
    assert peak - base < GROWTH_BOUND, f"grew {(peak - base) / 1e6:.1f} MB"


def test_url_rows_take_their_lists_folder_values_under_defaults_and_columns(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    """Precedence for a URL row: its CSV cells > `_defaults.json` > the list's folders;
    a list whose folders do not fit the pattern fails each of its URL rows alone."""
    settings = fast_settings(path_metadata="{site_id}/{camera_id}")
    watcher = Watcher(settings, ledger, lambda _batch_id: None)
    good = settings.inbox / "lot-7" / "cam-3" / "shots.urls.csv"
    good.parent.mkdir(parents=True)
    (settings.inbox / "lot-7" / "_defaults.json").write_text(json.dumps({"camera_id": "dflt"}))
    stray = settings.inbox / "stray.urls"
    with running(watcher):
        good.write_text(
            "url,site_id,caption\n"
            "https://img.example/1.jpg,,first\n"
            "https://img.example/2.jpg,lot-9,second\n"
        )
        stray.write_text("https://img.example/3.jpg\n")
        wait_for(_gone(good))
        wait_for(_gone(stray))
        wait_for(lambda: len([f for f in _rows(ledger) if f.origin == Origin.URL]) == 3)
    rows = {f.path: f for f in _rows(ledger) if f.origin == Origin.URL}
    first, second = rows["https://img.example/1.jpg"], rows["https://img.example/2.jpg"]
    assert first.sidecar == {"site_id": "lot-7", "camera_id": "dflt", "caption": "first"}
    assert second.sidecar == {"site_id": "lot-9", "camera_id": "dflt", "caption": "second"}
    third = rows["https://img.example/3.jpg"]
    assert (third.state, third.reason) == (FileState.FAILED, Reason.PATH_MISMATCH)
    assert "INGEST_PATH_METADATA" in (third.message or "")


def _everything_stored(ledger: Ledger) -> str:
    """Every value of every row of the ledger's tables, as text (JSON unescaped)."""
    out: list[str] = []
    with ledger.read() as s:
        for table in File.metadata.sorted_tables:
            for row in s.execute(select(table)):
                out += [json.dumps(v, ensure_ascii=False, default=str) for v in row]
    return "\n".join(out)


def _strings(value: object) -> str:
    """Every string in a parsed JSON value, joined (its escapes undone)."""
    if isinstance(value, dict):
        return "\n".join(_strings(k) + "\n" + _strings(v) for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(_strings(v) for v in value)
    return str(value)


SECRET = "hunter2-S3cret"  # noqa: S105 - a test password, looked for everywhere
WITH_SECRET = f"https://user:{SECRET}@img.example/a.jpg"
MASKED = "https://user:***@img.example/a.jpg"


def test_a_url_with_credentials_fails_and_its_password_is_kept_nowhere(  # noqa: PLR0917 - fixtures
    fast_settings: Callable[..., IngestSettings],
    ledger: Ledger,
    running: Any,
    redis_url: str,
    restore_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user trial: a URL with `user:password@` in a list. Its row fails (bad_url,
    saying why) with the URL masked, and the password is in no row, no reason file,
    no log line, nor in what `files --json` and `retry` print."""
    settings = fast_settings()
    logs = io.StringIO()
    configure_logging("DEBUG", LogFormat.JSON, stream=logs)
    watcher = Watcher(settings, ledger, lambda _b: None)
    manifest = settings.inbox / "creds.urls"
    with running(watcher):
        manifest.write_text(f"{WITH_SECRET}\nhttps://img.example/b.jpg\n")
        wait_for(_gone(manifest))
        wait_for(lambda: len(_url_rows(ledger)) == 2 and not watcher.manifests)
    rows = _url_rows(ledger)
    bad = rows[1]
    assert (bad.state, bad.reason, bad.path) == (FileState.FAILED, Reason.BAD_URL, MASKED)
    assert (
        bad.message == "creds.urls line 1: credentials in a URL (user:password@) are not accepted"
    )
    assert rows[2].state == FileState.QUEUED
    reason_file = settings.failed_path / "creds.urls.error.json"
    reason = json.loads(reason_file.read_text("utf-8"))
    assert [(b["url"], b["reason"]) for b in reason["bad_lines"]] == [(MASKED, "bad_url")]
    for name, value in {
        "INGEST_DATA_DIR": str(settings.data_dir),
        "INGEST_DATABASE_URL": settings.ledger_url,
        "INGEST_INBOX": str(settings.inbox),
        "INGEST_REDIS_URL": redis_url,
    }.items():
        monkeypatch.setenv(name, value)
    listed = CliRunner().invoke(app, ["files", "--json"])
    assert listed.exit_code == 0, listed.output
    assert MASKED in [r["path"] for r in json.loads(listed.stdout)]
    retried = CliRunner().invoke(app, ["retry", "--reason", "bad_url"])
    assert MASKED in retried.output, retried.output
    assert "manifest.read" in logs.getvalue()  # the intake's own lines were captured
    for where, text in {
        "ledger": _everything_stored(ledger),
        "reason file": _strings(reason),
        "logs": _strings([json.loads(line) for line in logs.getvalue().splitlines()]),
        "files --json": _strings(json.loads(listed.stdout)),
        "retry": retried.output,
    }.items():
        assert SECRET not in text, where


def test_a_bad_cell_fails_its_row_with_bad_sidecar_and_the_list_says_so(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    """A cell not of its key's type is bad metadata (bad_sidecar), as a sidecar would
    be; the list's reason file names the line and gives that reason."""
    settings = fast_settings()
    watcher = Watcher(settings, ledger, lambda _b: None)
    manifest = settings.inbox / "cells.urls.csv"
    with running(watcher):
        manifest.write_text("url,is_license_plate\nhttp://h/1.jpg,true\nhttp://h/2.jpg,perhaps\n")
        wait_for(_gone(manifest))
        wait_for(lambda: len(_url_rows(ledger)) == 2 and not watcher.manifests)
    rows = _url_rows(ledger)
    assert rows[2].state == FileState.QUEUED
    bad = rows[3]
    assert (bad.state, bad.reason, bad.path) == (
        FileState.FAILED,
        Reason.BAD_SIDECAR,
        "http://h/2.jpg",
    )
    assert (
        bad.message
        == "cells.urls.csv line 3: column 'is_license_plate': 'perhaps' is not true or false"
    )
    reason = json.loads((settings.failed_path / "cells.urls.csv.error.json").read_text("utf-8"))
    assert reason["reason"] == "bad_sidecar"
    assert [(b["line"], b["reason"]) for b in reason["bad_lines"]] == [(3, "bad_sidecar")]


def test_a_line_not_utf8_is_kept_with_its_bytes_as_percent_escapes(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    watcher = Watcher(settings, ledger, lambda _b: None)
    manifest = settings.inbox / "latin1.urls"
    with running(watcher):
        manifest.write_bytes(b"http://h/caf\xe9.jpg\n")
        wait_for(_gone(manifest))
        wait_for(lambda: len(_url_rows(ledger)) == 1 and not watcher.manifests)
    bad = _url_rows(ledger)[1]
    assert (bad.reason, bad.path) == (Reason.BAD_URL, "http://h/caf%E9.jpg")
    reason = json.loads((settings.failed_path / "latin1.urls.error.json").read_text("utf-8"))
    assert reason["bad_lines"][0]["url"] == "http://h/caf%E9.jpg"


# Userinfo as people write it (the user name without `/?#@:`, which end it); the password
# anything on one line but a port-like start (`u:123/x@h` is a port and a path, RFC 3986),
# with MARK in its middle: text that no other part of a row can hold.
MARK = "\u00a7pw\u00a7"
_users = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"], exclude_characters="/?#@:\u00a7"),
    min_size=1,
    max_size=10,
)
_half = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\n\r\x00"),
    max_size=10,
)
_passwords = st.builds(lambda a, b: a + MARK + b, _half, _half).filter(
    lambda p: not re.match(r"[0-9]+[/?#]", p) and p.strip() == p
)
_lists = itertools.count()


@given(
    st.lists(st.tuples(_users, _passwords), min_size=1, max_size=4),
    st.sampled_from(["https://img.example/a.jpg", "http://h:8080/x/y.png?s=1"]),
    st.booleans(),
)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_password_of_a_listed_url_reaches_the_ledger_or_a_reason_file(  # noqa: PLR0917 - fixtures and drawn values
    fast_settings: Callable[..., IngestSettings],
    ledger: Ledger,
    tmp_path: Path,
    creds: list[tuple[str, str]],
    url: str,
    as_csv: bool,
) -> None:
    """Any URL with userinfo, in either format, read by `scan` (the same intake as
    the watcher's, without its threads): each row fails, masked, and no part of a
    password is in the ledger or in the list's reason file."""
    settings = fast_settings().model_copy(update={"min_file_age": 0.0})
    n = next(_lists)
    root = tmp_path / f"tree{n}"
    root.mkdir()
    scheme, rest = url.split("://", 1)
    lines = [f"{scheme}://{user}:{password}@{rest}" for user, password in creds]
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([["url", "camera_id"], *([line, "cam"] for line in lines)])
        name = f"l{n}.urls.csv"
        (root / name).write_text(out.getvalue(), encoding="utf-8")
    else:
        name = f"l{n}.urls"
        (root / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    backfill(settings, ledger, root, lambda _b: None)
    source = os.path.join(os.path.realpath(root), name)
    rows = [f for f in list_files(ledger) if f.source_root == source]
    assert [(f.state, f.reason) for f in rows] == [(FileState.FAILED, Reason.BAD_URL)] * len(lines)
    assert [f.path for f in rows] == [f"{scheme}://{user}:***@{rest}" for user, _ in creds]
    reason = json.loads(next(settings.failed_path.rglob(f"{name}.error.json")).read_text("utf-8"))
    assert MARK not in _everything_stored(ledger)
    assert MARK not in _strings(reason)
