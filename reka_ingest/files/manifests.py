"""Image URL lists dropped into the inbox: reading them, one line at a time.

Two formats, told apart by the name (`is_manifest`, any case):

    NAME.urls       one URL per line; blank lines and lines starting with `#` are
                    skipped.
    NAME.urls.csv   a header row naming a `url` column (any case) and metadata
                    columns named like sidecar keys; each later row is one URL.
                    A cell is typed by the field it names (`CELL_TYPES`: Reka's
                    documented metadata and our `index`); an empty cell leaves its
                    key out; any other column stays a string. A quoted cell
                    cannot span lines: each physical line is one row, so a bad
                    row is one bad line. Columns with an empty name are ignored.

Both are UTF-8 (a BOM is skipped), any line ending. `read_manifest` yields one
`ManifestLine` per line that is not blank or a comment, in order, reading line
by line (nothing is kept per line: a million lines take the memory of one). A
line that cannot be used carries `error` (why, for a person) and `reason`
(`bad_url`; `bad_sidecar` for a URL whose CSV cell is bad) and fails alone; a
line not UTF-8 is kept with each bad byte as `%XX` (`caf%E9.jpg`); the whole
manifest is refused (`FileRejected`) only when it is not a text file, cannot be
read, or a `.urls.csv` has no `url` column.

The normal form of a URL (`normalise_url`), written down once:

    surrounding whitespace removed; no whitespace or control character inside;
    scheme `http` or `https`, lower-case;
    no `user:password@` (a secret would land in the ledger and the logs): see
    `mask_credentials`;
    host lower-case, a non-ASCII name in its IDNA (`xn--`) form, an IPv6
    address in brackets in its compressed form; a port only when it is not
    the scheme's default (80, 443);
    path: `/` when empty; percent-escapes of unreserved characters
    (`A-Z a-z 0-9 - . _ ~`) decoded, every other escape in upper-case hex, a
    `%` not starting an escape written `%25`, any character outside RFC 3986's
    allowed set percent-encoded as UTF-8; then `.` and `..` segments removed;
    query: the same escape rule, its order kept (`?` alone dropped);
    fragment dropped (it never reaches the server);
    at most `MAX_RAW_CHARS` characters as written and `MAX_URL_CHARS` once
    normalised (so a good line's text is stored whole, and normalising it
    again gives the same URL).

A line's text is kept (`ManifestLine.raw`, the row's `path`, the list's reason
file) only once its credentials are masked (`mask_credentials`), so nothing
later can carry a password: `https://user:***@host/a.jpg`. A URL holds
credentials when its authority (after `scheme://`, up to the first `/`, `?` or
`#`) holds an `@`, or when it is `NAME:TEXT` where TEXT is no port (not digits)
and an `@` comes later (a password with an unescaped `/`, `?` or `#`:
`user:pa/ss@host`). Then everything from the password (after the user name's
`:`; the whole userinfo when it has none) to the text's last `@` is written
`***`: a password may hold any of `@/?#`, and the line fails anyway. `NAME:TEXT`
with no `@` after it (a CSV cell cut short by a comma in a password) has TEXT
masked too. A password of digits before `/`, `?` or `#` (`user:123/x@host`)
reads as a port and a path, as RFC 3986 says: escape it (`%2F`). Only a line
that fails is masked: a line that is a URL has no credentials to mask.

Two lines naming the same resource by these rules have one normal form, and
`url_identity` (sha256 of `url:` + the normal form) is what a URL row holds in
`files.sha256`: the same URL twice is a duplicate, like the same bytes twice.
Applying `normalise_url` to its own result changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from reka_ingest.core.text import shown

URLS_SUFFIX: Final = ".urls"
CSV_SUFFIX: Final = ".urls.csv"
URL_COLUMN: Final = "url"
MAX_URL_CHARS: Final = 2048  # a normalised URL longer than this fails its line
# A URL as written, at most: a good line's text is kept whole in its row (`path`),
# so normalising it again gives the URL to send; a bad line's is cut to this.
MAX_RAW_CHARS: Final = MAX_URL_CHARS + 64
MAX_LINE_BYTES: Final = 64 * 1024  # a longer line fails alone (its rest is skipped unread)
_SNIFF_BYTES: Final = 8192  # read first: a NUL in it means not a text file
_IDENTITY_PREFIX: Final = b"url:"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")

# The type of each documented metadata key, for `.urls.csv` cells: Reka's
# SecurityMetadata (reka_ingest.reka.models), our own `index`
# (scheduler.sidecar.SidecarFields), and DetectionMetadata's keys. `list` cells
# are JSON arrays. Kept in step with those models by tests/files/test_manifests.py
# (this layer does not import the API models).
CELL_TYPES: Final[dict[str, type]] = {
    "camera_id": str,
    "recorded_timestamp_utc": int,
    "video_clip_id": str,
    "org_id": str,
    "site_id": str,
    "event_id": str,
    "caption": str,
    "detection_metadata": list,
    "index": bool,
    "class_name": str,
    "bounding_box": list,
    "confidence": float,
    "is_license_plate": bool,
    "license_plate_number": str,
    "ncic_category": str,
}
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f"})
_INT: Final = re.compile(r"[+-]?[0-9]{1,19}")

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS: Final = frozenset("!$&'()*+,;=")
_PATH_CHARS: Final = _UNRESERVED | _SUB_DELIMS | frozenset(":@/")
_QUERY_CHARS: Final = _PATH_CHARS | frozenset("?")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_PLAIN_HOST: Final = re.compile(r"[a-z0-9\-._~]+")
_SHOWN_CHARS: Final = 80
_ODD_CHAR: Final = re.compile(r"[\s\x00-\x1f\x7f\ud800-\udfff]")
_PLAIN_PATH: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_AUTHORITY_END: Final = re.compile(r"[/?#]")
MASK: Final = "***"  # what a URL's password is written as, wherever the URL is kept


def is_manifest(name: str) -> bool:
    """Whether a file name (or path) is an image URL list: `*.urls` or `*.urls.csv`."""
    lower = name.lower()
    return lower.endswith((URLS_SUFFIX, CSV_SUFFIX))


def url_identity(normalised: str) -> str:
    """What `files.sha256` holds for a URL row: sha256 of `url:` + the normal form (hex)."""
    return hashlib.sha256(_IDENTITY_PREFIX + normalised.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ManifestLine:
    """One URL line of a manifest: what was written, its normal form and metadata,
    or why it cannot be used."""

    line: int  # 1-based line number in the manifest
    raw: str  # the URL text as written (bounded)
    url: str | None  # normalised, None when `error`
    metadata: dict[str, object]  # CSV columns (typed), {} for *.urls
    error: str | None  # why this line fails, None when fine
    reason: Reason = Reason.BAD_URL  # what `error` fails the line with: a bad cell is bad_sidecar


# --- one URL ------------------------------------------------------------------------


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _secret(text: str, start: int) -> tuple[int, int, bool] | None:
    """The secret in the authority that begins at `start` (just after `scheme://`,
    or 0 for text without one), by the module's rule: where it starts and ends, and
    whether an `@` ends it (a URL with credentials); None when there is none."""
    cut = _AUTHORITY_END.search(text, start)
    end = cut.start() if cut is not None else len(text)
    at = text.rfind("@", start, end)
    if at >= 0:
        colon = text.find(":", start, at)
    else:
        if start == 0:
            return None  # no scheme: only an `@` in the authority is taken for credentials
        close = text.find("]", start, end) if text.startswith("[", start) else -1
        colon = text.find(":", max(start, close), end)  # an IPv6 host's port is after `]`
        if colon < 0:
            return None
        after = text[colon + 1 : end]
        if after.isascii() and after.isdigit():
            return None  # host:port, and maybe an `@` further on, in the path
        if text.find("@", end) < 0:
            return (colon + 1, end, False)  # no port and no `@`: a password cut short?
    # Credentials: the password may hold `@`, `/`, `?` or `#` unescaped, so the
    # secret runs to the text's last `@`.
    return (colon + 1 if colon >= 0 else start, text.rindex("@"), True)


def mask_credentials(text: str) -> str:
    """`text` with the password of each URL in it written `***` (`user:***@host`;
    `***@host` for userinfo without `:`), by the module's rule. Text without
    credentials comes back as it is."""
    if "@" not in text and ":" not in text:
        return text
    starts = [m.end() for m in re.finditer("://", text)] or [0]
    out: list[str] = []
    pos = 0
    for start in starts:
        span = _secret(text, start) if start >= pos else None
        if span is None or (span[0] == span[1] and not span[2]):  # `host:` and no `@`
            continue
        out += [text[pos : span[0]], MASK]
        pos = span[1]
    return "".join(out) + text[pos:] if out else text


def normalise_url(text: str) -> str:
    """The normal form of an http(s) URL (see the module's rule); `ValueError` saying why not."""
    text = text.strip()
    if not text:
        raise ValueError("no URL")
    if len(text) > MAX_RAW_CHARS:
        raise ValueError(f"{len(text)} characters as written; at most {MAX_RAW_CHARS}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError("not an http(s) URL (no scheme://)")
    secret = _secret(text, len(scheme) + len(sep))
    if secret is not None and secret[2]:
        raise ValueError("credentials in a URL (user:password@) are not accepted")
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an http(s) URL (scheme {_short(scheme)!r})")
    odd = _ODD_CHAR.search(text)
    if odd is not None:
        ch = odd.group()
        what = "a space" if ch.isspace() else f"the control character {ch!r}"
        raise ValueError(f"contains {what} at character {odd.start() + 1}")
    rest, _, _fragment = rest.partition("#")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:cut], rest[cut:]
    path, qmark, query = rest.partition("?")
    host = _host_port(authority, scheme)
    path = _remove_dot_segments(_escapes(path, _PATH_CHARS)) or "/"
    if not path.startswith("/"):
        path = "/" + path
    out = f"{scheme}://{host}{path}"
    query = _escapes(query, _QUERY_CHARS) if qmark else ""
    if query:
        out += "?" + query
    if len(out) > MAX_URL_CHARS:
        raise ValueError(f"{len(out)} characters once normalised; at most {MAX_URL_CHARS}")
    return out


def _host_port(authority: str, scheme: str) -> str:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("an IPv6 host without its closing ]")
        inner, port_text = authority[1:end], authority[end + 1 :]
        if port_text and not port_text.startswith(":"):
            raise ValueError(f"unexpected text after the IPv6 host: {_short(port_text)!r}")
        port_text = port_text[1:]
        try:
            host = f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise ValueError(f"{_short(inner)!r} is not an IPv6 address") from None
    else:
        name, colon, port_text = authority.rpartition(":")
        if not colon:
            name, port_text = authority, ""
        host = _host_name(name)
    if not port_text:
        return host
    if not port_text.isascii() or not port_text.isdigit():  # not shown: a password cut short?
        raise ValueError("the port (after the host's ':') is not a number")
    if len(port_text) > 5:
        raise ValueError(f"port {_short(port_text)} is out of range (1-65535)")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"


def _host_name(name: str) -> str:
    if not name:
        raise ValueError("no host")
    host = name.lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as err:
            raise ValueError(f"host {_short(name)!r} is not a valid name: {err}") from None
    if not _PLAIN_HOST.fullmatch(host):
        bad = _PLAIN_HOST.sub("", host)[:1] or host[:1]
        raise ValueError(f"host {_short(name)!r} contains {bad!r}")
    return host


def _escapes(text: str, allowed: frozenset[str]) -> str:
    """Percent-escapes made canonical: unreserved decoded, the rest upper-case, any
    other character outside `allowed` encoded as UTF-8."""
    if "%" not in text and (allowed is _PATH_CHARS and _PLAIN_PATH.fullmatch(text)):
        return text  # the common case: nothing to change
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) == 2 and set(pair) <= _HEX:
                decoded = chr(int(pair, 16))
                out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
                i += 3
                continue
            out.append("%25")
        elif ch in allowed:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986, 5.2.4, over whole segments."""
    if "." not in path:
        return path
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:] if path.startswith("/") else segments:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    last = segments[-1]
    if last in (".", ".."):
        out.append("")  # `/a/b/..` is the folder `/a/`
    return "/" + "/".join(out)


# --- CSV cells ------------------------------------------------------------------------


def _cell(key: str, text: str) -> object:
    kind = CELL_TYPES.get(key, str)
    if kind is str:
        return text
    if kind is int:
        if not _INT.fullmatch(text):
            raise ValueError(f"column {key!r}: {_short(text)!r} is not a whole number")
        return int(text)
    if kind is bool:
        lower = text.lower()
        if lower in _TRUE:
            return True
        if lower in _FALSE:
            return False
        raise ValueError(f"column {key!r}: {_short(text)!r} is not true or false")
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"column {key!r}: {_short(text)!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"column {key!r}: {_short(text)!r} is not a finite number")
        return number
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ValueError(f"column {key!r}: {_short(text)!r} is not a JSON array") from None
    if not isinstance(value, list):
        raise ValueError(f"column {key!r}: {_short(text)!r} is not a JSON array")
    return value


def _no_constant(token: str) -> object:
    raise ValueError(f"{token} is not valid JSON")


# --- reading a manifest -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str
    error: str | None  # the line cannot be read as text at all


def _lines(path: str) -> Iterator[_Line]:
    """The manifest's lines, decoded one at a time; `FileRejected` when it is not text."""
    name = os.path.basename(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below (a generator)
    except OSError as err:
        raise FileRejected(Reason.UNREADABLE, f"{name}: cannot open: {err.strerror}") from None
    try:
        head = _read(fh, name, _SNIFF_BYTES, peek=True)
        if head.startswith(_UTF16_BOMS):
            raise FileRejected(
                Reason.UNSUPPORTED_FORMAT, f"{name}: UTF-16 text; save the list as UTF-8"
            )
        if b"\x00" in head:
            raise FileRejected(
                Reason.UNSUPPORTED_FORMAT,
                f"{name}: not a text file (NUL bytes); an image URL list is UTF-8 text",
            )
        number = 0
        while True:
            raw = _read(fh, name, MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:  # skip the rest of an overlong line, unread
                    more = _read(fh, name, MAX_LINE_BYTES)
                    if not more or more.endswith(b"\n"):
                        break
                yield _Line(number, "", f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            raw = raw.rstrip(b"\r\n")
            try:
                yield _Line(number, raw.decode("utf-8"), None)
            except UnicodeDecodeError as err:
                text = shown(raw.decode("utf-8", "surrogateescape"))  # b"\xe9" -> "%E9"
                yield _Line(number, text, f"not UTF-8 text (byte {err.start + 1} of the line)")
    finally:
        fh.close()


def _read(fh: io.BufferedReader, name: str, size: int, *, peek: bool = False) -> bytes:
    try:
        return fh.peek(size)[:size] if peek else fh.readline(size)
    except OSError as err:
        raise FileRejected(Reason.UNREADABLE, f"{name}: cannot read: {err.strerror}") from None


def _bounded(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 3] + "..."


def _refused(number: int, text: str, error: str, reason: Reason = Reason.BAD_URL) -> ManifestLine:
    """A line that fails: its text kept with its credentials masked (before it is
    cut to length, so a cut cannot split a secret from its `@`)."""
    return ManifestLine(number, _bounded(mask_credentials(text)), None, {}, error, reason)


def _url_line(number: int, text: str, metadata: dict[str, object] | str) -> ManifestLine:
    """A line naming `text` as its URL, with its metadata (or why its cells are bad)."""
    try:
        url = normalise_url(text)
    except ValueError as err:
        return _refused(number, text, str(err))
    if isinstance(metadata, str):
        return _refused(number, text, metadata, Reason.BAD_SIDECAR)
    return ManifestLine(number, _bounded(text), url, metadata, None)


def _read_urls(lines: Iterator[_Line]) -> Iterator[ManifestLine]:
    for ln in lines:
        text = ln.text.strip()
        if ln.error is None and (not text or text.startswith("#")):
            continue
        if ln.error is not None:
            yield _refused(ln.number, ln.text, ln.error)
            continue
        yield _url_line(ln.number, text, {})


# A CSV list's column separators, in the order the header is tried with them.
DELIMITERS: Final = (",", ";", "\t")
_SEPARATORS: Final = "',', ';' or a tab"


def _header(lines: Iterator[_Line], name: str) -> tuple[int, list[str], str]:
    """The `url` column's index, the column names (stripped; '' ignored) and the
    separator: the first of DELIMITERS that makes a `url` column."""
    for ln in lines:
        if ln.error is not None:
            raise FileRejected(Reason.UNSUPPORTED_FORMAT, f"{name}: header line: {ln.error}")
        if not ln.text.strip() or ln.text.lstrip().startswith("#"):
            continue
        by_delimiter = {d: _header_cells(ln.text, d, name) for d in DELIMITERS}
        # The first separator that makes a `url` column is the list's (a spreadsheet
        # saves CSV with `;` where `,` is the decimal mark, and TSV with tabs).
        delimiter = next(
            (d for d, cells in by_delimiter.items() if URL_COLUMN in _lower(cells)), ","
        )
        columns = by_delimiter[delimiter]
        lower = _lower(columns)
        if lower.count(URL_COLUMN) != 1:
            found = ", ".join(repr(_short(c)) for c in columns[:10]) or "none"
            what = "more than one" if URL_COLUMN in lower else "no"
            raise FileRejected(
                Reason.UNSUPPORTED_FORMAT,
                f"{name}: {what} 'url' column in the header (line {ln.number}; columns,"
                f" separated by {_SEPARATORS}: {found})",
            )
        named = [c for c in columns if c]
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise FileRejected(
                Reason.UNSUPPORTED_FORMAT,
                f"{name}: column {_short(twice[0])!r} appears twice in the header",
            )
        return lower.index(URL_COLUMN), columns, delimiter
    raise FileRejected(Reason.UNSUPPORTED_FORMAT, f"{name}: no header line with a 'url' column")


def _header_cells(text: str, delimiter: str, name: str) -> list[str]:
    try:
        cells = next(csv.reader([text], delimiter=delimiter, strict=True), [])
    except csv.Error as err:
        raise FileRejected(Reason.UNSUPPORTED_FORMAT, f"{name}: header: {err}") from None
    return [c.strip() for c in cells]


def _lower(columns: list[str]) -> list[str]:
    return [c.lower() for c in columns]


def _read_csv(lines: Iterator[_Line], name: str) -> Iterator[ManifestLine]:
    url_at, columns, delimiter = _header(lines, name)
    for ln in lines:
        if ln.error is not None:
            yield _refused(ln.number, ln.text, ln.error)
            continue
        if not ln.text.strip():
            continue
        try:
            cells = next(csv.reader([ln.text], delimiter=delimiter, strict=True), [])
        except csv.Error as err:
            yield _refused(ln.number, ln.text, f"not a CSV row: {err}")
            continue
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        url_text = cells[url_at] if url_at < len(cells) else ""
        if len(cells) > len(columns):
            error = f"{len(cells)} cells, but the header names {len(columns)} columns"
            yield _refused(ln.number, url_text, error)
            continue
        yield _url_line(ln.number, url_text, _cells(columns, cells))


def _cells(columns: list[str], cells: list[str]) -> dict[str, object] | str:
    """A row's metadata, typed by its columns; or why a cell is bad (bad_sidecar)."""
    metadata: dict[str, object] = {}
    try:
        for key, cell in zip(columns, cells, strict=False):
            value = cell.strip()
            if key and key.lower() != URL_COLUMN and value:
                metadata[key] = _cell(key, value)
    except ValueError as err:
        return str(err)
    return metadata


def read_manifest(path: str) -> Iterator[ManifestLine]:
    """Stream a manifest's URL lines; raises `FileRejected` (when the iteration starts,
    or when a read fails part way) if the manifest as a whole cannot be used."""
    lines = _lines(path)
    if path.lower().endswith(CSV_SUFFIX):
        return _read_csv(lines, os.path.basename(path))
    return _read_urls(lines)
