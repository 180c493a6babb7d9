"""Names as bytes (reka_ingest.core.text, reka_ingest.files.names), by property:
any name the filesystem allows is shown as valid UTF-8 by the one `%XX` rule,
and every name derived from it fits."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from reka_ingest.core.text import clean_text, shown
from reka_ingest.files.names import NAME_MAX, fit_name, fit_path, utf8_len

# Any POSIX name: bytes but "/" and NUL, not "." or "..", at most NAME_MAX bytes.
names = (
    st.binary(min_size=1, max_size=NAME_MAX)
    .map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_"))
    .filter(lambda b: b not in (b".", b".."))
)
reserves = st.integers(min_value=0, max_value=40)


@given(names)
def test_any_name_is_shown_as_utf8_and_valid_utf8_names_as_they_are(raw: bytes) -> None:
    name = os.fsdecode(raw)
    text = shown(name)
    text.encode("utf-8")  # never raises
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert "%" in text
    else:
        assert text == name


@given(names, names)
def test_names_without_a_percent_sign_are_shown_apart(a: bytes, b: bytes) -> None:
    if a != b and b"%" not in a + b:
        assert shown(os.fsdecode(a)) != shown(os.fsdecode(b))


@given(names, reserves)
def test_a_fitted_name_leaves_its_reserve_and_a_short_plain_name_is_kept(
    raw: bytes, reserve: int
) -> None:
    name = os.fsdecode(raw)
    fitted = fit_name(name, reserve)
    assert 0 < utf8_len(fitted) <= NAME_MAX - reserve
    assert "/" not in fitted and "\x00" not in fitted
    if utf8_len(shown(name)) <= NAME_MAX - reserve:
        assert fitted == shown(name)


@given(st.text(min_size=200, max_size=300), st.text(min_size=200, max_size=300))
def test_two_long_names_never_fit_to_the_same_name(a: str, b: str) -> None:
    a, b = a.replace("/", "_").replace("\x00", "_"), b.replace("/", "_").replace("\x00", "_")
    if a != b:
        assert fit_name(a, 40) != fit_name(b, 40)


@given(st.lists(names, min_size=1, max_size=6), reserves)
def test_a_fitted_path_stays_inside_and_each_part_fits(parts: list[bytes], reserve: int) -> None:
    rel = os.fsdecode(b"/".join(parts))
    fitted = fit_path(rel, reserve)
    pieces = fitted.split("/")
    assert ".." not in pieces and "" not in pieces and not fitted.startswith("/")
    assert all(utf8_len(p) <= NAME_MAX for p in pieces)
    assert utf8_len(pieces[-1]) <= NAME_MAX - reserve


@given(st.text(), st.integers(min_value=4, max_value=500))
def test_clean_text_is_storable_and_bounded(text: str, limit: int) -> None:
    cleaned = clean_text(text, limit)
    cleaned.encode("utf-8")
    assert "\x00" not in cleaned and len(cleaned) <= limit
