"""README.md tells the truth: its settings table matches the settings classes,
and it opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from reka_ingest.core.settings_doc import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_settings_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "run: python -m reka_ingest.core.settings_doc --write README.md"


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8")[:800]
    assert "make run" in head and "make test" in head
