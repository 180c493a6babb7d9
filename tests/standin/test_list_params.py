"""List Images answers every `limit` and `offset` by its contract, never with a 500.

Property test against a real stand-in on loopback: any integer (huge, negative,
past `sys.maxsize`, thousands of digits) and any string. A valid pair gets the
page of the uploaded images it names (empty past the end); anything else a 400
`validation_error` whose `param` names the first bad parameter (limit, then
offset). Schemathesis found `offset` > sys.maxsize answered 500.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reka_ingest.core.constants import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX
from tests.standin.conftest import Api, error_of

UPLOADED = 7
_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")

# What goes in the query: left out (None), an int, or any string.
VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.integers(min_value=sys.maxsize - 2, max_value=sys.maxsize * 4),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=0, max_value=UPLOADED + 2).map(lambda n: f"00{n}"),
    st.text(),
    st.text(alphabet="+-0123456789 _.e"),
)


def _meaning(value: int | str | None, default: int) -> int | None:
    """The integer the contract reads from `value`, or None when it is not one."""
    if value is None or value == "":  # a blank value is as good as absent
        return default
    if isinstance(value, int):
        return value
    # Decimal, not int(): str-to-int refuses more than 4300 digits in this process too.
    return int(Decimal(value)) if _ASCII_INTEGER.fullmatch(value) else None


def _check(api: Api, ids: list[str], limit: int | str | None, offset: int | str | None) -> None:
    params = {k: str(v) for k, v in (("limit", limit), ("offset", offset)) if v is not None}
    response = api.http.get("/v1/images", params=params)
    assert response.status_code < 500, response.text
    want_limit = _meaning(limit, LIST_LIMIT_DEFAULT)
    want_offset = _meaning(offset, 0)
    limit_ok = want_limit is not None and 1 <= want_limit <= LIST_LIMIT_MAX
    offset_ok = want_offset is not None and want_offset >= 0
    if limit_ok and offset_ok:
        assert want_limit is not None and want_offset is not None  # for mypy
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"results"}
        got = [r["image_id"] for r in body["results"]]
        assert got == ids[want_offset : want_offset + want_limit]
    else:
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["type"] == "validation_error"
        assert error["param"] == ("offset" if limit_ok else "limit")


def test_list_answers_any_limit_and_offset_by_the_contract(api: Api, jpegs: list[bytes]) -> None:
    ids = [r["image_id"] for r in api.upload_ok(jpegs[:UPLOADED])]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(limit=VALUES, offset=VALUES)
    @example(limit=None, offset=sys.maxsize + 1)  # the 500 schemathesis found
    @example(limit=None, offset=2**64)
    @example(limit=None, offset="9" * 5000)  # past Python's int-string digit limit
    @example(limit="-" + "9" * 5000, offset=None)
    @example(limit=None, offset="0" * 5000 + "3")
    @example(limit=None, offset=UPLOADED)
    @example(limit=LIST_LIMIT_MAX, offset=UPLOADED - 1)
    @example(limit=None, offset="١٢")  # digits, but not ASCII ones
    @example(limit=None, offset=" 1")
    def check(limit: int | str | None, offset: int | str | None) -> None:
        _check(api, ids, limit, offset)

    check()


def test_an_offset_past_sys_maxsize_is_an_empty_page(api: Api, jpegs: list[bytes]) -> None:
    api.upload_ok(jpegs[:2])
    for offset in (sys.maxsize, sys.maxsize + 1, 10**100):
        response = api.http.get("/v1/images", params={"offset": offset})
        assert response.status_code == 200, response.text
        assert response.json() == {"results": []}
