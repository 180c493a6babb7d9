"""The URL list parser (reka_ingest.files.manifests): both formats, odd bytes, and the
normal form of a URL; pure, no ledger."""

from __future__ import annotations

import csv
import io
import re
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from reka_ingest.files.manifests import (
    CELL_TYPES,
    MAX_LINE_BYTES,
    MAX_RAW_CHARS,
    MAX_URL_CHARS,
    ManifestLine,
    is_manifest,
    mask_credentials,
    normalise_url,
    read_manifest,
    url_identity,
)
from reka_ingest.reka.models import DetectionMetadata, SecurityMetadata
from scheduler.sidecar import SidecarFields


def _write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def _read(tmp_path: Path, name: str, data: bytes | str) -> list[ManifestLine]:
    return list(read_manifest(_write(tmp_path, name, data)))


# --- names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.urls", True),
        ("A.URLS", True),
        ("dir/list.Urls.CSV", True),
        ("list.urls.csv", True),
        ("list.csv", False),
        ("urls", False),
        ("a.urls.txt", False),
        ("photo.jpg", False),
    ],
)
def test_is_manifest(name: str, expected: bool) -> None:
    assert is_manifest(name) is expected


# --- the normal form ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("HTTP://Example.COM:80/a", "http://example.com/a"),
        ("https://EXAMPLE.com:443", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://h/a/%7e/./b/../c%2f?x=%7E&y#frag", "http://h/a/~/c%2F?x=~&y"),
        ("http://h/%e4", "http://h/%E4"),
        ("http://h/a%zz", "http://h/a%25zz"),
        ("http://bücher.de/ä b".replace(" ", "%20"), "http://xn--bcher-kva.de/%C3%A4%20b"),
        ("http://[0:0::1]:8080/a", "http://[::1]:8080/a"),
        ("  http://h/x?  ", "http://h/x"),
        ("http://h?q=1", "http://h/?q=1"),
        ("http://h/a/b/..", "http://h/a/"),
        ("http://h/%2E%2E/x", "http://h/x"),
    ],
)
def test_normalise(given: str, expected: str) -> None:
    assert normalise_url(given) == expected
    assert normalise_url(expected) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("ftp://h/x", "not an http(s) URL"),
        ("example.com/x.jpg", "no scheme"),
        ("http:///x", "no host"),
        ("http://h:99999/", "out of range"),
        ("http://h:x/", "not a number"),
        ("http://user:pw@h/x", "credentials"),
        ("http://h/a b", "a space"),
        ("http://h/a\x07", "control character"),
        ("http://h!x/", "contains '!'"),
        ("http://[zz]/", "not an IPv6 address"),
        ("http://h/" + "a" * MAX_URL_CHARS, "once normalised"),
        ("http://h/x#" + "f" * MAX_RAW_CHARS, "as written"),
        ("", "no URL"),
    ],
)
def test_normalise_refuses(given: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        normalise_url(given)
    assert why in str(err.value)


def test_identity_is_64_hex_and_follows_the_normal_form() -> None:
    one = url_identity(normalise_url("HTTP://Example.com:80/a%7e"))
    two = url_identity(normalise_url("http://example.com/a~#x"))
    assert one == two
    assert len(one) == 64
    assert int(one, 16) >= 0
    assert one != url_identity(normalise_url("http://example.com/b"))


_url_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80
).map(lambda s: "http://h/" + s)


@given(st.one_of(_url_text, st.text(max_size=60)))
@settings(max_examples=300, deadline=None)
def test_normalisation_is_idempotent(text: str) -> None:
    try:
        once = normalise_url(text)
    except ValueError:
        return
    assert normalise_url(once) == once


# --- *.urls ---------------------------------------------------------------------------


def test_urls_lines_comments_blank_crlf_bom(tmp_path: Path) -> None:
    data = (
        b"\xef\xbb\xbf# my list\r\nhttp://h/a.jpg\r\n\r\n   \r\n"
        b"  https://H/b.jpg  \nnot a url\n#x\n"
    )
    lines = _read(tmp_path, "a.urls", data)
    assert [(ln.line, ln.url, ln.error is None) for ln in lines] == [
        (2, "http://h/a.jpg", True),
        (5, "https://h/b.jpg", True),
        (6, None, False),
    ]
    assert lines[1].raw == "https://H/b.jpg"
    assert lines[2].raw == "not a url"
    assert "no scheme" in (lines[2].error or "")
    assert all(ln.metadata == {} for ln in lines)


def test_urls_first_line_after_bom(tmp_path: Path) -> None:
    lines = _read(tmp_path, "a.urls", b"\xef\xbb\xbfhttp://h/a")
    assert [ln.url for ln in lines] == ["http://h/a"]


def test_non_utf8_line_fails_alone(tmp_path: Path) -> None:
    lines = _read(tmp_path, "a.urls", b"http://h/a\nhttp://h/caf\xe9.jpg\nhttp://h/b\n")
    assert [ln.line for ln in lines] == [1, 2, 3]
    assert lines[1].url is None
    assert "not UTF-8" in (lines[1].error or "")
    assert lines[1].raw == "http://h/caf%E9.jpg"  # each byte not UTF-8 as %XX, like a name
    assert lines[2].url == "http://h/b"


def test_overlong_line_fails_alone_and_the_next_one_is_read(tmp_path: Path) -> None:
    data = b"http://h/" + b"a" * (MAX_LINE_BYTES * 2) + b"\nhttp://h/b\n"
    lines = _read(tmp_path, "a.urls", data)
    assert [ln.line for ln in lines] == [1, 2]
    assert "longer than" in (lines[0].error or "")
    assert lines[1].url == "http://h/b"


def test_raw_is_bounded(tmp_path: Path) -> None:
    lines = _read(tmp_path, "a.urls", "http://h/" + "a" * 10_000)
    assert lines[0].error is not None
    assert len(lines[0].raw) <= MAX_URL_CHARS + 64


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
        ("http://h/a\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_not_text_is_refused_whole(tmp_path: Path, data: bytes, why: str) -> None:
    with pytest.raises(FileRejected) as err:
        _read(tmp_path, "a.urls", data)
    assert err.value.reason == Reason.UNSUPPORTED_FORMAT
    assert why in err.value.message


def test_unreadable_is_refused_whole(tmp_path: Path) -> None:
    with pytest.raises(FileRejected) as err:
        list(read_manifest(str(tmp_path / "missing.urls")))
    assert err.value.reason == Reason.UNREADABLE


def test_streams_without_reading_ahead(tmp_path: Path) -> None:
    """The first line comes before the rest are parsed (a generator over the file)."""
    path = _write(tmp_path, "a.urls", "".join(f"http://h/{i}\n" for i in range(50_000)))
    it = read_manifest(path)
    assert next(it).line == 1
    assert sum(1 for _ in it) == 49_999


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30))
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_lines_one_result_per_url_line(tmp_path: Path, lines: list[bytes]) -> None:
    """Never raises for a text file, and every line that is not blank or a comment
    gives exactly one ManifestLine, with its own number."""
    data = b"\n".join(lines)
    if b"\x00" in data[:8192] or data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return  # refused as a whole: not text (tested above)
    path = _write(tmp_path, "p.urls", data)
    got = list(read_manifest(path))
    expected = []
    for number, line in enumerate(lines, 1):
        raw = line[3:] if number == 1 and line.startswith(b"\xef\xbb\xbf") else line
        try:
            text = raw.rstrip(b"\r").decode("utf-8").strip()
        except UnicodeDecodeError:
            expected.append(number)
            continue
        if text and not text.startswith("#"):
            expected.append(number)
    assert [ln.line for ln in got] == expected
    for ln in got:
        assert (ln.url is None) == (ln.error is not None)


# --- credentials ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("https://user:password@host/a.jpg", "https://user:***@host/a.jpg"),
        ("HTTP://u:p@H:8080/a.jpg?x=1", "HTTP://u:***@H:8080/a.jpg?x=1"),
        ("https://token@host/a.jpg", "https://***@host/a.jpg"),
        ("https://u:p@ss:w@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:pa/ss@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:pa?ss@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:pa#ss@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:pa ss@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:/pw@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:ab@cd/ef@host/a.jpg", "https://u:***@host/a.jpg"),
        ("https://u:p@host/users/@me.jpg", "https://u:***@me.jpg"),
        ("https://[:pw#@host/a.jpg", "https://[:***@host/a.jpg"),  # no IPv6 host
        ("ftp://u:p@host/a.jpg", "ftp://u:***@host/a.jpg"),
        ("u:p@host/a.jpg", "u:***@host/a.jpg"),
    ],
)
def test_a_url_with_credentials_fails_and_only_its_masked_form_is_kept(
    tmp_path: Path, line: str, kept: str
) -> None:
    (got,) = _read(tmp_path, "a.urls", line + "\n")
    assert (got.url, got.raw, got.reason) == (None, kept, Reason.BAD_URL)
    assert got.error is not None
    if "://" in line and not line.startswith("ftp"):
        assert "credentials in a URL (user:password@) are not accepted" in got.error


@pytest.mark.parametrize(
    "url",
    [
        "https://host:8080/users/@me.jpg",
        "https://host/a@b.jpg?mail=x@y.z",
        "http://[::1]:8080/@a",
        "https://host/r?to=https://u:p@x/",  # a URL in the query is the server's business
    ],
)
def test_an_at_sign_after_the_host_is_no_credential(tmp_path: Path, url: str) -> None:
    (got,) = _read(tmp_path, "a.urls", url + "\n")
    assert (got.url, got.raw) == (normalise_url(url), url)


def test_every_credential_in_a_bad_csv_row_is_masked(tmp_path: Path) -> None:
    data = 'url,caption\n"https://u:p1@h/a.jpg"x,"see http://v:p2@h/"\nhttps://u:p3,@h/b.jpg,c,d\n'
    lines = _read(tmp_path, "m.urls.csv", data)
    assert [ln.url for ln in lines] == [None, None]
    assert lines[0].raw == '"https://u:***@h/"'  # to the last `@`: the caption's URL too
    assert lines[1].raw == "https://u:***"  # a comma cut the password short
    assert not any(p in ln.raw + (ln.error or "") for p in ("p1", "p2", "p3") for ln in lines)


# Userinfo a person might write: no `/`, `?`, `#` or `@` in the user name (those end it).
_users = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=["Cs", "Cc"], exclude_characters="/?#@:"
    ),
    min_size=1,
    max_size=12,
)
# Any password on one line, escaped or not; one that starts with digits and then `/`, `?`
# or `#` is a port and a path by RFC 3986 (`u:123/x@h`), and is left out.
_passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\n\r\x00"),
    min_size=4,
    max_size=24,
).filter(lambda p: not re.match(r"[0-9]+[/?#]", p) and p.strip() == p)
_hosts = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z]{2,5})?(:[0-9]{1,5})?", fullmatch=True)
_paths = st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]=[a-z0-9]{0,6})?", fullmatch=True)


def _csv_row(*cells: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


@given(
    st.sampled_from(["http", "https", "HTTPS"]), _users, _passwords, _hosts, _paths, st.booleans()
)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_password_of_a_url_leaves_the_reader(  # noqa: PLR0917 - drawn values
    tmp_path: Path, scheme: str, user: str, password: str, host: str, path: str, as_csv: bool
) -> None:
    """Whatever the userinfo, the line fails and is kept masked to the letter (so no
    part of the password is kept), with an error that quotes nothing of it; the user
    name stays, to find the line by."""
    line = f"{scheme}://{user}:{password}@{host}{path}"
    if as_csv:
        (got,) = _read(tmp_path, "p.urls.csv", "url,camera_id\n" + _csv_row(line, "cam-1"))
    else:
        (got,) = _read(tmp_path, "p.urls", line + "\n")
    assert got.url is None
    assert got.raw == f"{scheme}://{user}:***@{host}{path}"
    assert got.error == "credentials in a URL (user:password@) are not accepted"


@given(st.one_of(_url_text, _url_text.map(lambda u: u.replace("h/", "h:8/", 1))))
@settings(max_examples=300, deadline=None)
def test_masking_never_touches_a_url_that_normalises(text: str) -> None:
    """A good line is kept as written (it is what the worker sends), so the rule that
    finds credentials in a line must find none in a URL that normalises."""
    try:
        normalise_url(text)
    except ValueError:
        return
    text = text.strip()
    second = text.find("://", text.find("://") + 3)  # a URL in its query is not its own
    own = text if second < 0 else text[:second]
    assert mask_credentials(own) == own


# --- *.urls.csv ---------------------------------------------------------------------


def test_csv_typed_cells(tmp_path: Path) -> None:
    data = (
        "URL, camera_id ,recorded_timestamp_utc,index,is_license_plate,confidence,"
        "detection_metadata,notes,\r\n"
        'http://h/a.jpg,cam-1,1700000000,false,yes,0.5,"[{""class_name"": ""car"",'
        ' ""bounding_box"": [1,2,3,4]}]",hello,\r\n'
        "http://h/b.jpg,,,,,,,,\r\n"
    )
    lines = _read(tmp_path, "m.urls.csv", data)
    assert [ln.line for ln in lines] == [2, 3]
    assert lines[0].error is None
    assert lines[0].metadata == {
        "camera_id": "cam-1",
        "recorded_timestamp_utc": 1700000000,
        "index": False,
        "is_license_plate": True,
        "confidence": 0.5,
        "detection_metadata": [{"class_name": "car", "bounding_box": [1, 2, 3, 4]}],
        "notes": "hello",
    }
    assert lines[1].metadata == {}
    assert lines[1].url == "http://h/b.jpg"


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("http://h/a,abc,", "not a whole number"),
        ("http://h/a,,maybe", "not true or false"),
        ("http://h/a,1,true,extra", "3 columns"),
        ("ftp://h/a,1,true", "not an http(s) URL"),
        (",1,true", "no URL"),
        ('http://h/a,"1"x,true', "not a CSV row"),
    ],
)
def test_csv_bad_row_fails_alone(tmp_path: Path, row: str, why: str) -> None:
    data = f"url,recorded_timestamp_utc,index\n{row}\nhttp://h/ok,5,\n"
    lines = _read(tmp_path, "m.urls.csv", data)
    assert [ln.line for ln in lines] == [2, 3]
    assert lines[0].url is None
    assert why in (lines[0].error or "")
    bad_cell = why in ("not a whole number", "not true or false")
    assert lines[0].reason == (Reason.BAD_SIDECAR if bad_cell else Reason.BAD_URL)
    assert lines[1].error is None
    assert lines[1].metadata == {"recorded_timestamp_utc": 5}


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("camera_id,site_id\n", "no 'url' column"),
        ("url,URL\n", "more than one 'url' column"),
        ("url,a,a\n", "appears twice"),
    ],
)
def test_csv_bad_header_is_refused_whole(tmp_path: Path, header: str, why: str) -> None:
    with pytest.raises(FileRejected) as err:
        _read(tmp_path, "m.urls.csv", header + "http://h/a,b,c\n")
    assert err.value.reason == Reason.UNSUPPORTED_FORMAT
    assert why in err.value.message


def test_csv_bad_header_names_the_separators_tried(tmp_path: Path) -> None:
    with pytest.raises(FileRejected) as err:
        _read(tmp_path, "m.urls.csv", "link|camera_id\nhttp://h/a|c\n")
    assert "separated by ',', ';' or a tab" in err.value.message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    delimiter=st.sampled_from([",", ";", "\t"]),
    bom=st.booleans(),
    cameras=st.lists(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
            lambda t: t.strip() == t and not t.startswith("#")
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_csv_columns_may_be_separated_by_comma_semicolon_or_tab(
    tmp_path: Path, delimiter: str, bom: bool, cameras: list[str]
) -> None:
    """A list saved by a spreadsheet where `,` is the decimal mark (`;`), or as TSV,
    reads as the same URLs and cells; a `;` or `,` inside a URL stays in the URL."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["camera_id", "url"])
    urls = [f"http://h/{i};v=1,2.jpg" for i in range(len(cameras))]
    writer.writerows(zip(cameras, urls, strict=True))
    data = ("\ufeff" if bom else "") + out.getvalue()
    lines = _read(tmp_path, "m.urls.csv", data.encode("utf-8"))
    assert [ln.error for ln in lines] == [None] * len(cameras)
    assert [ln.url for ln in lines] == urls
    assert [ln.metadata for ln in lines] == [{"camera_id": c} for c in cameras]


@pytest.mark.parametrize("data", ["", "# only a comment\n\n  \n"])
def test_csv_without_header_is_refused_whole(tmp_path: Path, data: str) -> None:
    with pytest.raises(FileRejected) as err:
        _read(tmp_path, "m.urls.csv", data)
    why = "no header line"
    assert err.value.reason == Reason.UNSUPPORTED_FORMAT
    assert why in err.value.message


def test_csv_non_utf8_row_fails_alone(tmp_path: Path) -> None:
    lines = _read(tmp_path, "m.urls.csv", b"url,caption\nhttp://h/a,caf\xe9\nhttp://h/b,ok\n")
    assert [(ln.line, ln.error is None) for ln in lines] == [(2, False), (3, True)]


def _model_types(model: type) -> dict[str, type]:
    out: dict[str, type] = {}
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        ann = info.annotation
        if typing.get_origin(ann) in (typing.Union, types.UnionType):  # `X | None`
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        kind = typing.get_origin(ann) or ann
        out[name] = kind
    return out


def test_cell_types_follow_the_models() -> None:
    """CELL_TYPES is the documented fields of the sidecar and detection models."""
    expected = {**_model_types(DetectionMetadata), **_model_types(SidecarFields)}
    assert set(_model_types(SecurityMetadata)) <= set(expected)
    assert expected == CELL_TYPES
