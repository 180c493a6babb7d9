"""rclone's glob syntax, compiled to regular expressions (INGEST_INCLUDE / INGEST_EXCLUDE).

Pure, and in the foundation so the settings can check every glob at start (a bad
one is a SettingsError naming the variable); `reka_ingest.files.filters` applies them.

Each glob becomes one regular expression, as rclone's `fs/filter/glob.go` builds
it (rclone implements its globs the same way), matched against a path relative
to the inbox or the scanned root, `/`-separated:

    *        [^/]*      any run of characters within one path segment
    **       .*         any run of characters, across segments
    ?        [^/]       one character, never `/`
    [...]    a class    `[a-z]`, `[!a-z]` or `[^a-z]` (negated: never `/` either),
                        POSIX names inside (`[[:digit:]]`), `\\d \\w \\s` and their capitals
    {a,b}    (?:a|b)    alternatives (they may nest and hold `/` and `**`)
    \\c       c          the character c itself (`\\*`, `\\{`, `\\\\`); `\\d \\w \\s`: classes
    /glob    \\A...\\Z    a leading `/` anchors the glob at the root
    glob     (^|/)...\\Z  otherwise it matches the path's tail from a segment boundary
                        ("the file name or the path tail"): `file.jpg` takes `file.jpg`
                        and `a/b/file.jpg`, not `afile.jpg`
    dir/     dir/**     a trailing `/` means the folder and all below it (rclone does
                        this for excludes; here for includes too, since a file path
                        never ends with `/` and such an include would match nothing)

Matching is case-sensitive; `\\d`, `\\w`, `\\s` are ASCII (as Go's are); `.` spans a
newline (a POSIX name may hold one). Names that are not UTF-8 come as lone
surrogates (`os.fsdecode`): they match `?`, `*` and themselves, and never crash.

Not taken from rclone: `{{regexp}}` sections (a backtracking regular expression
from a setting could stall the watcher; rclone's are RE2, linear), and
`--ignore-case`.

Why not a library: `wcmatch`'s globmatch (GLOBSTAR|BRACE) treats `**` as a
globstar only as a whole segment (rclone's `a**` crosses folders), has no "no
leading `/` = tail match" rule (each glob would need a `**/` prefix, which then
skips hidden folders unless DOTGLOB), and expands braces into many patterns;
`pathspec` follows gitignore, whose rules for `/` differ again. rclone's own
translation is a few dozen lines, so it is followed here directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

_FLAGS: Final = re.DOTALL | re.ASCII  # `.` spans a newline in a name; \d \w \s are ASCII
_PERL_CLASSES: Final = frozenset("dDwWsS")
# POSIX bracket names, as Go's regexp/syntax defines them (ASCII).
_POSIX: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_SPECIAL_IN_CLASS: Final = frozenset("\\]^[&~|")


class GlobError(ValueError):
    """A glob that cannot be compiled; the message names the glob and what is wrong."""


def _class(glob: str, start: int) -> tuple[str, int]:
    """The character class opening at `glob[start] == '['`: (its regex, the index after it)."""
    i = start + 1
    out = ["["]
    if i < len(glob) and glob[i] in "!^":
        out.append("^/")  # a negated class never takes the separator, as `?` never does
        i += 1
    members = 0
    while True:
        if i >= len(glob):
            raise GlobError(f"mismatched '[' and ']' in glob {glob!r}")
        c = glob[i]
        if c == "]":
            if members == 0:
                raise GlobError(f"empty character class in glob {glob!r}")
            out.append("]")
            return "".join(out), i + 1
        members += 1
        if c == "\\":
            if i + 1 >= len(glob):
                raise GlobError(f"trailing '\\' in glob {glob!r}")
            e = glob[i + 1]
            out.append("\\" + e if e in _PERL_CLASSES or e in _SPECIAL_IN_CLASS or e == "-" else e)
            i += 2
        elif c == "[" and glob.startswith("[:", i):
            end = glob.find(":]", i + 2)
            name = glob[i + 2 : end] if end > 0 else ""
            if name not in _POSIX:
                raise GlobError(f"unknown character class {glob[i : end + 2]!r} in glob {glob!r}")
            out.append(_POSIX[name])
            i = end + 2
        else:
            out.append("\\" + c if c in _SPECIAL_IN_CLASS else c)
            i += 1


def _escaped(glob: str, i: int) -> str:
    """The regex of `\\c` at `glob[i]`: a Perl class, or the character itself."""
    if i + 1 >= len(glob):
        raise GlobError(f"trailing '\\' in glob {glob!r}")
    e = glob[i + 1]
    return "\\" + e if e in _PERL_CLASSES else re.escape(e)


def _stars(glob: str, i: int) -> tuple[str, int]:
    """The regex of the run of `*` at `glob[i]`, and the index after it."""
    j = i
    while j < len(glob) and glob[j] == "*":
        j += 1
    if j - i > 2:
        raise GlobError(f"too many stars in glob {glob!r}")
    return ("[^/]*" if j - i == 1 else ".*"), j


def _brace(glob: str, i: int, depth: int) -> tuple[str, int]:
    """The regex of `{`, `,` or `}` at `glob[i]`, and the brace depth after it."""
    c = glob[i]
    if c == "{":
        if glob.startswith("{{", i):
            raise GlobError(
                f"{{{{regexp}}}} sections are not supported (glob {glob!r}): use glob syntax"
            )
        return "(?:", depth + 1
    if c == "}":
        if depth == 0:
            raise GlobError(f"mismatched '{{' and '}}' in glob {glob!r}")
        return ")", depth - 1
    return ("|" if depth > 0 else ","), depth


def glob_to_regex(glob: str) -> str:
    """The regular expression (source) that `glob` means for a relative path (see above)."""
    if not glob:
        raise GlobError("an empty glob matches nothing; leave it out")
    if glob.endswith("/"):
        glob += "**"
    anchored = glob.startswith("/")
    body = glob[1:] if anchored else glob
    out = ["\\A" if anchored else "(?:\\A|/)"]
    depth = 0
    i = 0
    while i < len(body):
        c = body[i]
        if c == "*":
            regex, i = _stars(body, i)
        elif c == "[":
            regex, i = _class(body, i)
        elif c == "\\":
            regex, i = _escaped(body, i), i + 2
        elif c == "]":
            raise GlobError(f"mismatched ']' in glob {glob!r}")
        elif c in "{},":
            regex, depth = _brace(body, i, depth)
            i += 1
        else:
            regex, i = ("[^/]" if c == "?" else re.escape(c)), i + 1
        out.append(regex)
    if depth:
        raise GlobError(f"mismatched '{{' and '}}' in glob {glob!r}")
    out.append("\\Z")
    return "".join(out)


def compile_glob(glob: str) -> re.Pattern[str]:
    """`glob` compiled (GlobError, naming it, when it is not a valid glob)."""
    source = glob_to_regex(glob)
    try:
        return re.compile(source, _FLAGS)
    except re.error as err:  # a class the translation let through, e.g. a bad range
        raise GlobError(f"bad glob {glob!r}: {err}") from None


def check_globs(globs: Iterable[str]) -> None:
    """Compile every glob (settings validation): GlobError for the first bad one."""
    for glob in globs:
        compile_glob(glob)


_GLOB_SPECIAL: Final = frozenset("*?[]{},\\")


def escape(text: str) -> str:
    """A glob that matches `text` literally (anchor it with a leading `/` for a whole path)."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)
