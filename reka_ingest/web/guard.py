"""Who may see the web page, and which POSTs are the page's own.

The rule is Flower's in this project: bound off loopback, the page refuses to
start without INGEST_WEB_BASIC_AUTH (`check_bind`). At run time (`Guard`, an
ASGI middleware around every request):

- with basic auth set, every request needs it (compared in constant time),
  whatever its address;
- without it, only loopback clients are answered, and only under a loopback
  `Host` name, so a page elsewhere cannot reach this one through DNS
  rebinding.

The retry POST is the page's own only when the browser says it comes from
this origin (`Sec-Fetch-Site: same-origin` and an `Origin` equal to this
host, when sent) and it carries a token the page issued: an HMAC, under a
secret made when the process starts, of its issue time and the action it
allows (`CsrfTokens`). No cookie is needed or set. Every answer carries a
content security policy that allows this origin's own scripts, styles and
images only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import IngestSettings

REALM = "reka-ingest"
TOKEN_TTL = 6 * 3600.0  # seconds a page's retry button stays valid
SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    # `same-origin`: the page's own form POSTs keep their Origin (with `no-referrer` a
    # browser sends `Origin: null`); links to image URLs elsewhere carry no referrer.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def is_loopback(host: str | None) -> bool:
    """Whether `host` (an address or name, maybe `[v6]`) is this machine's loopback."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: IngestSettings) -> None:
    """Refuse an open page off loopback, as Flower's rule (`reka_ingest.cli.processes`)."""
    if settings.web_basic_auth is None and not is_loopback(settings.web_host):
        raise SettingsError(
            f"INGEST_WEB_BASIC_AUTH: the web page bound to {settings.web_host} needs basic"
            " auth (user:password); without it, bind INGEST_WEB_HOST to 127.0.0.1"
        )


def _host_name(host_header: str) -> str:
    """`127.0.0.1:8766` -> `127.0.0.1`; `[::1]:8766` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def basic_auth_ok(header: str | None, expected: bytes) -> bool:
    """Whether an `Authorization: Basic ...` header carries `expected` (user:password)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


class Guard:
    """ASGI middleware: the auth rule above, and the security headers on every answer."""

    def __init__(self, app: ASGIApp, *, basic_auth: bytes | None) -> None:
        self.app = app
        self.basic_auth = basic_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> PlainTextResponse | None:
        headers = Headers(scope=scope)
        if self.basic_auth is not None:
            if basic_auth_ok(headers.get("authorization"), self.basic_auth):
                return None
            return PlainTextResponse(
                "authentication required",
                status_code=401,
                headers={"www-authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        client = scope.get("client")
        if not is_loopback(client[0] if client else None):
            return PlainTextResponse(
                "refused: this page answers loopback clients only;"
                " set INGEST_WEB_BASIC_AUTH to open it to others",
                status_code=403,
            )
        if not is_loopback(_host_name(headers.get("host", ""))):
            return PlainTextResponse("refused: not a loopback host name", status_code=403)
        return None


def same_origin(headers: Headers, scheme: str) -> bool:
    """Whether a browser says this request comes from this page's own origin.

    A request without either header (a script, curl) is not a browser's
    cross-site request; the token still has to be right.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host")
    return host is not None and hmac.compare_digest(
        origin.lower().encode(), f"{scheme}://{host}".lower().encode()
    )


class CsrfTokens:
    """Tokens for the page's forms: `issued.mac`, mac = HMAC(secret, issued:action)."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl: float = TOKEN_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock

    def _mac(self, issued: int, action: str) -> str:
        msg = f"{issued}:{action}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def issue(self, action: str) -> str:
        issued = int(self._clock())
        return f"{issued}.{self._mac(issued, action)}"

    def valid(self, token: str | None, action: str) -> bool:
        if not token:
            return False
        issued_text, _, mac = token.partition(".")
        try:
            issued = int(issued_text)
        except ValueError:
            return False
        age = self._clock() - issued
        if not -60 <= age <= self.ttl:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(issued, action).encode())
