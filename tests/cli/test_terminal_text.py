"""What a person's terminal shows of a name (reka_ingest.core.text.printable): one
line per file whatever its name holds (a newline, an escape sequence, a
bidirectional override, rich markup), in the `files` listing, in `status --watch`,
in `check`'s report and in console logs. JSON and CSV keep the name as it is."""

from __future__ import annotations

import io
import json
import logging
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from reka_ingest.cli.check import render as check_render
from reka_ingest.cli.main import app
from reka_ingest.cli.watch_status import render, take_snapshot
from reka_ingest.core.logs import configure_logging, get_logger
from reka_ingest.core.text import printable, shown
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.schema import File
from tests.support.logging_setup import FakeTerminal
from worker.serverside import CheckReport

# Characters a terminal acts on rather than shows: none may reach it raw.
BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
HOSTILE = [
    "two\nlines.jpg",
    "clear\x1b[2J\x1b[Hscreen.jpg",
    "bell\x07and\rreturn\ttab.jpg",
    "gpj.\u202eevil.jpg",
    "c1\x85next\x9bline.jpg",
    "rich a[/]b [red]c[/red].jpg",
    "sep\u2028line\u2029para.jpg",
    os.fsdecode(b"latin1-\xe9\n.jpg"),
]


def unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ord(ch) in BIDI


names = st.binary(min_size=1, max_size=255).map(os.fsdecode)


@given(names)
def test_any_name_prints_as_one_safe_line_and_a_plain_name_as_it_is(name: str) -> None:
    text = printable(name)
    text.encode("utf-8")  # never raises
    assert not any(unsafe(ch) for ch in text), repr(text)
    if not any(unsafe(ch) for ch in shown(name)):
        assert text == shown(name)


@given(st.text())
def test_only_the_unsafe_characters_change(text: str) -> None:
    out = printable(text)
    kept = "".join(ch for ch in shown(text) if not unsafe(ch))
    assert "".join(ch for ch in out if ch != "\\" and not ch.isalnum()) == "".join(
        ch for ch in kept if ch != "\\" and not ch.isalnum()
    )
    assert printable(out) == out  # escaping twice changes nothing more


@pytest.fixture
def hostile_ledger(tmp_path: Path) -> Iterator[tuple[str, Ledger]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    with ledger.write() as s:
        for n, name in enumerate(HOSTILE):
            s.add(
                File(
                    path=name,
                    source_root="/inbox",
                    work_path=f"/work/{n}.jpg",
                    origin="event",
                    size=100,
                    mtime=0.0,
                    state="failed",
                    reason="not_an_image",
                    message=f"cannot read {name}",
                    seen_at=1000.0 + n,
                    finished_at=1000.0 + n,
                    updated_at=1000.0 + n,
                )
            )
    yield url, ledger
    ledger.dispose()


def test_the_files_listing_is_one_line_a_file_and_json_keeps_the_names(
    hostile_ledger: tuple[str, Ledger], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = hostile_ledger
    monkeypatch.setenv("INGEST_DATABASE_URL", url)
    monkeypatch.setenv("INGEST_DATA_DIR", str(tmp_path / "var"))
    listed = CliRunner().invoke(app, ["files"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert len(lines) == len(HOSTILE), lines
    assert not any(unsafe(ch) for ch in listed.stdout.replace("\n", ""))
    for name in HOSTILE:
        assert sum(printable(name) in line for line in lines) == 1, name
    assert "two\\nlines.jpg  cannot read two\\nlines.jpg" in listed.stdout
    as_json = CliRunner().invoke(app, ["files", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert sorted(r["path"] for r in json.loads(as_json.stdout)) == sorted(map(shown, HOSTILE))


def test_the_live_view_draws_any_name_as_text(hostile_ledger: tuple[str, Ledger]) -> None:
    _, ledger = hostile_ledger
    snap = take_snapshot(ledger, None, now=2000.0)
    assert {f.path for f in snap.failures} <= set(map(shown, HOSTILE))
    console = Console(record=True, width=400, color_system=None)
    console.print(render(snap))  # rich markup in a name would raise MarkupError here
    text = console.export_text()
    assert "rich a[/]b [red]c[/red].jpg" in text  # shown, not read as markup
    assert "two\\nlines.jpg" in text and "clear\\x1b[2J\\x1b[Hscreen.jpg" in text
    assert "\x1b" not in text and "\u202e" not in text


def test_a_console_log_line_stays_one_line_and_json_keeps_the_name(
    restore_logging: None,
) -> None:
    terminal = FakeTerminal()
    configure_logging("INFO", stream=terminal)
    # A library's message carries the name in its text, not as a value of its own.
    logging.getLogger("tests.library").warning("cannot move %s", "two\nlines\x1b[2J.jpg")
    get_logger("tests.terminal").info("file_seen", path="gpj.\u202eevil.jpg")
    out = terminal.getvalue()
    assert out.count("\n") == 2, out
    assert "cannot move two\\nlines\\x1b[2J.jpg" in out
    assert "\x1b[2J" not in out and "\u202e" not in out
    piped = io.StringIO()
    configure_logging("INFO", stream=piped)
    get_logger("tests.terminal").info("file_seen", path="two\nlines.jpg")
    assert json.loads(piped.getvalue())["path"] == "two\nlines.jpg"


def test_the_server_check_report_shows_what_reka_holds_one_line_an_item() -> None:
    report = CheckReport(images_on_server=1, orphans=1)
    report.example("orphans", {"image_id": "img-1", "metadata": {"path": "a\u0085b\u202ec.jpg"}})
    report.note("the server said: line one\nline two")
    lines = check_render(report, fix=False, dry_run=False)
    text = "\n".join(lines)
    assert not any(unsafe(ch) for line in lines for ch in line), lines
    assert "a\\x85b\\u202ec.jpg" in text and "note: the server said: line one\\nline two" in text
