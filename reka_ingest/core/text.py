"""Foreign text made safe to store, log and send: one rule for every place a file
name (or any text from outside) is seen.

A POSIX name is any bytes but `/` and NUL. Python gives such a name as `str`
with each byte that is not UTF-8 carried as a lone surrogate (`os.fsdecode`,
`surrogateescape`); such a string cannot be stored in a text column, written as
UTF-8 or sent in a request. So every name that leaves the filesystem layer (the
ledger's `path`, `files --json/--csv`, logs, reason files) goes through `shown`:

    a name that is valid UTF-8 is shown as it is;
    each byte that is not is shown as `%XX` (two uppercase hex digits):
    b"caf\\xe9.jpg" -> "caf%E9.jpg".

`clean_text` bounds any other foreign string (a message, an error's text) before
it reaches a column: no NUL, no lone surrogate, at most a given length.

`printable` is for a person's terminal: a name may hold a newline (one file
would read as two lines of a listing), an escape sequence (it would move the
cursor or recolour the screen) or a bidirectional override (it would reorder
what follows it on the line). Each such character is written as its Python
escape (`\\n`, `\\x1b`, `\\u202e`), so every name is one line that shows what
is there. Stored text, JSON and CSV keep the name as it is (`shown`).
"""

from __future__ import annotations

from typing import Final

_SURROGATE_LOW: Final = 0xDC80
_SURROGATE_HIGH: Final = 0xDCFF


def shown(name: str) -> str:
    """`name` (as `os.fsdecode` gives it) as valid UTF-8 text, by the `%XX` rule."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return name
    out: list[str] = []
    for ch in name:
        code = ord(ch)
        if _SURROGATE_LOW <= code <= _SURROGATE_HIGH:
            out.append(f"%{code - 0xDC00:02X}")  # a byte that was not UTF-8
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"%{code:04X}")  # any other lone surrogate (not from a name)
        else:
            out.append(ch)
    return "".join(out)


def _escape(code: int) -> str:
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    if code in named:
        return named[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# What a terminal acts on instead of showing: C0 and C1 controls and DEL, the line
# and paragraph separators, and the marks that change the direction of the text after them.
_UNSAFE: Final = {
    code: _escape(code)
    for code in (
        *range(0x00, 0x20),
        *range(0x7F, 0xA0),
        0x061C,  # ARABIC LETTER MARK
        0x200E,  # LEFT-TO-RIGHT MARK
        0x200F,  # RIGHT-TO-LEFT MARK
        0x2028,  # LINE SEPARATOR
        0x2029,  # PARAGRAPH SEPARATOR
        *range(0x202A, 0x202F),  # embeddings and overrides
        *range(0x2066, 0x206A),  # isolates
    )
}


def printable(text: str) -> str:
    """`text` as one line a terminal shows as it is: `shown`, then each character of
    `_UNSAFE` written as its escape (see the module's docstring)."""
    text = shown(text)
    if text.isprintable():  # the common case: nothing to escape
        return text
    return text.translate(_UNSAFE)


def clean_text(text: str, limit: int | None = None) -> str:
    """A foreign string made safe for a text column: shown, no NUL, at most `limit` chars."""
    text = shown(text).replace("\x00", "\\0")
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
