"""For tests that configure logging: a stream that says it is a terminal (the
fixture that restores logging afterwards, `restore_logging`, is in tests/conftest.py)."""

from __future__ import annotations

import io


class FakeTerminal(io.StringIO):
    """A text stream `configure_logging` takes for a terminal (console lines, colours)."""

    def isatty(self) -> bool:
        return True
