"""The web page refuses what it must: paths in requests, strangers, forged POSTs.

Thumbnails are looked up by row id only, and serve only that row's file (never
through a link, never a non-image); off loopback, or with basic auth set, every
request needs the password; the retry POST needs this page's origin and token.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.web.guard import CsrfTokens, check_bind
from tests.web.conftest import (
    BASE,
    ELSEWHERE,
    LOOPBACK,
    add_failed,
    add_file,
    raw_get,
    thumb_source,
)

PASSWORD = "s3cret-Pa55word"  # noqa: S105 - the test's own password, looked for in pages
ANY = "0.0.0.0"  # noqa: S104 - the address the refusal is about; nothing binds to it
AUTH = f"admin:{PASSWORD}"


def basic(user_password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}


def retry_token(html: str, reason: str) -> str:
    form = re.search(
        rf'name="reason" value="{reason}">\s*<input type="hidden" name="token" value="([^"]+)"',
        html,
    )
    assert form is not None, html[-3000:]
    return form.group(1)


# --- thumbnails: by row id, that row's file only -------------------------------------

TRAVERSALS = [
    "/thumb/../../etc/passwd",
    "/thumb/..%2F..%2Fetc%2Fpasswd",
    "/thumb/%2e%2e/%2e%2e/etc/passwd",
    "/thumb/%252e%252e%252fetc%252fpasswd",
    "/thumb/1/../../../etc/passwd",
    "/thumb//etc/passwd",
    "/thumb/%2Fetc%2Fpasswd",
    "/thumb/..\\..\\etc\\passwd",
    "/thumb/-1",
    "/thumb/1.5",
    "/thumb/0x1",
    "/thumb/1e3",
    "/thumb/%31%00",
    "/thumb/99999999999999999999999999",
    "/static/../app.py",
    "/static/..%2Fapp.py",
    "/static/%2e%2e/guard.py",
    "/static/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
]


def test_no_path_in_a_request_reaches_a_file(
    live_server: str, ledger: Ledger, tmp_path: Path
) -> None:
    # Row 1 exists and has an image: an id "hidden" in a path must not reach it either.
    add_file(ledger, path="a.jpg", work_path=str(thumb_source(tmp_path)))
    for raw_path in TRAVERSALS:
        status, headers, body = raw_get(live_server, raw_path)
        assert b"root:" not in body, raw_path
        assert b"import" not in body and b"def " not in body, raw_path  # no source file
        assert headers.get("content-type", "") != "image/jpeg", (raw_path, status)
        assert status in (400, 404) or headers.get("x-thumbnail") == "placeholder", (
            raw_path,
            status,
        )


def test_a_thumbnail_is_made_from_its_own_rows_file(
    make_client: Callable[..., TestClient], ledger: Ledger, tmp_path: Path
) -> None:
    image = thumb_source(tmp_path)
    # Its dropped path points outside: it does not matter, only work/final paths are read.
    own = add_file(ledger, path="../../../etc/passwd", work_path=str(image))
    client = make_client()
    r = client.get(f"/thumb/{own}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as thumb:
        assert max(thumb.size) == 160 and thumb.format == "JPEG"
    assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
    again = client.get(f"/thumb/{own}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_rows_pointing_at_other_files_give_a_placeholder(
    make_client: Callable[..., TestClient], ledger: Ledger, tmp_path: Path
) -> None:
    image = thumb_source(tmp_path)
    link = tmp_path / "images" / "link.jpg"
    link.symlink_to(image)
    bomb = tmp_path / "images" / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 64 million pixels, a few kB on disk
    rows = {
        "passwd": add_file(ledger, path="p.jpg", work_path="/etc/passwd"),
        "symlink": add_file(ledger, path="l.jpg", work_path=str(link)),
        "symlink as final": add_file(
            ledger, path="f.jpg", work_path=str(tmp_path / "gone.jpg"), final_path=str(link)
        ),
        "directory": add_file(ledger, path="d.jpg", work_path=str(tmp_path)),
        "gone": add_file(ledger, path="g.jpg", work_path=str(tmp_path / "gone2.jpg")),
        "bomb": add_file(ledger, path="b.png", work_path=str(bomb)),
        "dev": add_file(ledger, path="z.jpg", work_path="/dev/zero"),
    }
    client = make_client()
    for what, file_id in [*rows.items(), ("no such row", 10_000)]:
        r = client.get(f"/thumb/{file_id}")
        assert r.status_code == 200, what
        assert r.headers["x-thumbnail"] == "placeholder", what
        assert r.headers["content-type"].startswith("image/svg+xml"), what
        assert b"root:" not in r.content and b"<svg" in r.content, what


# --- who may see the page -------------------------------------------------------------


def test_without_basic_auth_only_loopback_clients_are_answered(
    make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    here, there = make_client(LOOPBACK), make_client(ELSEWHERE)
    assert here.get("/").status_code == 200
    for path in ("/", "/thumb/1", "/static/web.css"):
        r = there.get(path)
        assert r.status_code == 403, path
        assert "INGEST_WEB_BASIC_AUTH" in r.text
    assert there.post("/retry", data={"reason": "auth_failed"}).status_code == 403
    # A loopback client under another host name: a page elsewhere, rebound by DNS.
    rebound = make_client(LOOPBACK, base_url="http://evil.example:8766")
    assert rebound.get("/").status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("admin:wrong"),
        basic("admin"),
        basic(f"root:{PASSWORD}"),
        {"Authorization": "Bearer " + base64.b64encode(AUTH.encode()).decode()},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": f"Basic {AUTH}"},  # not encoded
    ],
    ids=["none", "wrong-password", "no-password", "wrong-user", "bearer", "garbage", "plain"],
)
def test_with_basic_auth_every_request_needs_it(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    redis_url: str,
    headers: dict[str, str],
) -> None:
    settings = make_settings(redis_url=redis_url, web_basic_auth=AUTH, web_host=ANY)
    for origin in (ELSEWHERE, LOOPBACK):
        client = make_client(origin, settings=settings)
        for path in ("/", "/thumb/1", "/static/web.css"):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (origin, path)
            assert r.headers["www-authenticate"].startswith("Basic ")
        assert client.post("/retry", headers=headers).status_code == 401


def test_the_right_password_opens_the_page_from_anywhere_and_is_never_shown(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    redis_url: str,
    ledger: Ledger,
) -> None:
    settings = make_settings(redis_url=redis_url, web_basic_auth=AUTH, web_host=ANY)
    add_failed(settings, ledger, "x.jpg", reason="auth_failed")
    for origin in (ELSEWHERE, LOOPBACK):
        r = make_client(origin, settings=settings).get("/", headers=basic(AUTH))
        assert r.status_code == 200
        assert PASSWORD not in r.text and "set-cookie" not in r.headers
    with pytest.raises(SettingsError) as err:
        load_settings(web_basic_auth="no-colon-Secret")
    assert "INGEST_WEB_BASIC_AUTH" in str(err.value) and "no-colon-Secret" not in str(err.value)


def test_the_page_sets_no_cookie_and_a_strict_policy(
    make_client: Callable[..., TestClient], ledger: Ledger, tmp_path: Path
) -> None:
    file_id = add_file(ledger, path="a.jpg", work_path=str(thumb_source(tmp_path)))
    client = make_client()
    for path in ("/", f"/thumb/{file_id}", "/static/web.css", "/static/refresh.js"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "set-cookie" not in r.headers, path
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
    assert client.get("/").headers["cache-control"] == "no-store"
    assert not client.cookies


def test_off_loopback_the_page_refuses_to_start_without_basic_auth(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="INGEST_WEB_BASIC_AUTH"):
        check_bind(make_settings(web_host=ANY).ingest)
    check_bind(make_settings(web_host=ANY, web_basic_auth=AUTH).ingest)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(make_settings(web_host=host).ingest)
    # The command says so and starts nothing.
    env = {
        **os.environ,
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "INGEST_WEB_HOST": ANY,
        "INGEST_LOG_FORMAT": "console",
    }
    env.pop("INGEST_WEB_BASIC_AUTH", None)
    done = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "web"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "INGEST_WEB_BASIC_AUTH" in done.stderr and "bound to 0.0.0.0" in done.stderr


# --- the retry POST is the page's own -------------------------------------------------


@pytest.fixture
def failed_twice(web_settings: Settings, ledger: Ledger) -> list[int]:
    return [
        add_failed(web_settings, ledger, f"f{i}.jpg", reason="auth_failed", seed=i)
        for i in range(2)
    ]


def _still_failed(ledger: Ledger, ids: list[int]) -> bool:
    return all(f.state == FileState.FAILED for f in list_files(ledger) if f.id in ids)


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Origin": "https://evil.example"}, "page"),
        ({"Origin": "null"}, "page"),
        ({"Origin": "http://127.0.0.1:9999"}, "page"),
        ({"Sec-Fetch-Site": "cross-site"}, "page"),
        ({"Sec-Fetch-Site": "same-site"}, "page"),
        ({"Origin": BASE, "Sec-Fetch-Site": "same-origin"}, None),
        ({"Origin": BASE, "Sec-Fetch-Site": "same-origin"}, "forged"),
        ({"Origin": BASE, "Sec-Fetch-Site": "same-origin"}, "other-reason"),
        ({"Origin": BASE, "Sec-Fetch-Site": "same-origin"}, "other-secret"),
        ({"Origin": BASE, "Sec-Fetch-Site": "same-origin"}, "expired"),
        ({}, "forged"),
    ],
    ids=[
        "foreign-origin",
        "null-origin",
        "other-port",
        "cross-site",
        "same-site",
        "no-token",
        "forged-token",
        "token-of-another-reason",
        "token-of-another-process",
        "expired-token",
        "no-browser-forged",
    ],
)
def test_a_cross_site_or_forged_retry_is_refused(  # noqa: PLR0917 - fixtures and parameters
    make_client: Callable[..., TestClient],
    ledger: Ledger,
    failed_twice: list[int],
    tokens: CsrfTokens,
    headers: dict[str, str],
    token: str | None,
) -> None:
    client = make_client()
    page_token = retry_token(client.get("/").text, "auth_failed")
    forms = {
        "page": page_token,
        "forged": "1700000000." + "0" * 64,
        "other-reason": tokens.issue("retry:upload_failed"),
        "other-secret": CsrfTokens(b"z" * 32).issue("retry:auth_failed"),
        "expired": CsrfTokens(b"k" * 32, clock=lambda: 1_000_000.0).issue("retry:auth_failed"),
    }
    form = {"reason": "auth_failed"} | ({"token": forms[token]} if token else {})
    r = client.post("/retry", data=form, headers=headers)
    assert r.status_code == 403, r.text
    assert _still_failed(ledger, failed_twice)


def test_retry_takes_only_a_form_post(
    make_client: Callable[..., TestClient], ledger: Ledger, failed_twice: list[int]
) -> None:
    client = make_client()
    token = retry_token(client.get("/").text, "auth_failed")
    assert client.get("/retry").status_code == 405
    as_json = client.post("/retry", json={"reason": "auth_failed", "token": token})
    assert as_json.status_code == 415
    unknown = client.post("/retry", data={"reason": "../../etc", "token": token})
    assert unknown.status_code == 400
    assert _still_failed(ledger, failed_twice)
