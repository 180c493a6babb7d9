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


def test_the_layouts_module_counts_are_the_folders() -> None:
    """Each room in the Layout block says how many modules it holds; a module added
    or removed changes the count there too."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    rooms: dict[str, int] = {}
    room = ""
    for line in block.splitlines():
        if line and not line.startswith(" "):
            room = line.split()[0]
        if line.rstrip().endswith(" modules"):
            rooms[room] = int(line.split()[-2])
    assert len(rooms) >= 10, rooms
    root = README.parent
    for folder, count in rooms.items():
        modules = [p for p in (root / folder).glob("*.py") if p.name != "__init__.py"]
        assert len(modules) == count, (folder, sorted(p.name for p in modules))
