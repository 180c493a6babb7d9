"""The web page's Starlette app: built by `create_app` from settings, served by `serve`.

Routes:

    GET  /                 the page (server-rendered; static/refresh.js redraws it)
    GET  /thumb/{id:int}   a thumbnail of ledger row `id` (a placeholder when none)
    POST /retry            `reka-ingest retry --reason REASON`, from the page's button
    GET  /static/...       the stylesheet, the refresh script, the placeholder

Database and Redis calls are blocking: they run in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import redis
import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reka_ingest.core.logs import get_logger
from reka_ingest.core.places import listen
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import RETRY_REASONS
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.budget import duration
from reka_ingest.metrics.counters import redis_client
from reka_ingest.web import data
from reka_ingest.web.guard import CsrfTokens, Guard, check_bind, same_origin
from reka_ingest.web.thumbs import Thumbnails, candidates
from scheduler.requeue import Retried, retry_failed

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
REFRESH_SECONDS = 5
THUMB_MAX_AGE = 300  # seconds a browser may keep a thumbnail without asking again
MAX_ROW_ID = 2**31 - 1  # `files.id` is a 32-bit integer on PostgreSQL
PLACEHOLDER = (HERE / "static" / "placeholder.svg").read_bytes()

RetryFn = Callable[[str], Retried]


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.globals["sparkline"] = data.sparkline
    env.globals["stamp"] = lambda t: time.strftime("%H:%M:%S", time.localtime(t))
    return env


def create_app(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    client: redis.Redis[bytes] | None = None,
    retry: RetryFn | None = None,
    tokens: CsrfTokens | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The app; it opens (and at shutdown closes) the ledger and Redis it was not given."""
    ingest = settings.ingest
    owned_ledger = ledger is None
    led = ledger if ledger is not None else open_ledger(ingest.ledger_url, migrate=False)
    owned_client = client is None
    rds = client if client is not None else redis_client(ingest.broker_url)
    csrf = tokens or CsrfTokens()
    thumbs = Thumbnails(max_bytes=ingest.max_image_bytes)
    templates = _templates()

    def do_retry(reason: str) -> Retried:
        return retry_failed(settings, led, reason=reason)

    retry_fn = retry or do_retry

    async def page(request: Request) -> Response:
        now = clock()
        view = await run_in_threadpool(
            data.read_page, led, rds, now=now, batch_size=ingest.batch_max_files
        )
        tokens_by_reason = {r.reason: csrf.issue(_action(r.reason)) for r in view.reasons}
        html = templates.get_template("index.html").render(
            page=view,
            tokens=tokens_by_reason,
            notice=_notice(request),
            refresh=REFRESH_SECONDS,
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def thumb(request: Request) -> Response:
        file_id: int = request.path_params["file_id"]
        if file_id > MAX_ROW_ID:
            return PlainTextResponse("no such file", status_code=404)
        made = await run_in_threadpool(_thumb_of, led, thumbs, file_id)
        if made is None:
            return Response(
                PLACEHOLDER,
                media_type="image/svg+xml",
                headers={"cache-control": "no-cache", "x-thumbnail": "placeholder"},
            )
        headers = {"cache-control": f"private, max-age={THUMB_MAX_AGE}", "etag": made.etag}
        if request.headers.get("if-none-match") == made.etag:
            return Response(status_code=304, headers=headers)
        return Response(made.body, media_type="image/jpeg", headers=headers)

    async def retry_post(request: Request) -> Response:
        if not same_origin(request.headers, request.url.scheme):
            log.warning("web_retry_refused", why="cross-site")
            return PlainTextResponse("refused: a cross-site request", status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return PlainTextResponse("refused: expected a form", status_code=415)
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        reason = str(form.get("reason") or "")
        token = str(form.get("token") or "")
        if reason not in RETRY_REASONS:
            return PlainTextResponse("unknown reason", status_code=400)
        if not csrf.valid(token, _action(reason)):
            log.warning("web_retry_refused", why="token", reason=reason)
            return PlainTextResponse(
                "refused: the form's token is missing, wrong or expired; reload the page",
                status_code=403,
            )
        done = await run_in_threadpool(retry_fn, reason)
        skipped = sum(len(paths) for paths in done.skipped.values())
        log.info(
            "web_retry",
            reason=reason,
            files=done.files,
            batches=len(done.batches),
            skipped=skipped,
            send_error=done.send_error,
        )
        query = urlencode(
            {"retried": reason, "requeued": done.files, "skipped": skipped}
            | ({"unsent": 1} if done.send_error else {})
        )
        return RedirectResponse(f"/?{query}", status_code=303)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned_client:
                rds.close()
            if owned_ledger:
                led.dispose()

    auth = ingest.web_basic_auth
    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/thumb/{file_id:int}", thumb, methods=["GET"]),
            Route("/retry", retry_post, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(
        Guard,
        basic_auth=auth.get_secret_value().encode() if auth is not None else None,
    )
    return app


def _action(reason: str) -> str:
    return f"retry:{reason}"


def _thumb_of(ledger: Ledger, thumbs: Thumbnails, file_id: int) -> Any:
    with ledger.read() as s:
        row = s.execute(select(File.final_path, File.work_path).where(File.id == file_id)).first()
    if row is None:
        return None
    return thumbs.for_row(file_id, candidates(row.final_path, row.work_path))


def _notice(request: Request) -> dict[str, Any] | None:
    """The outcome of a retry the page just made (from the redirect's query)."""
    q = request.query_params
    reason = q.get("retried")
    if reason not in RETRY_REASONS:
        return None
    try:
        requeued, skipped = int(q.get("requeued", "0")), int(q.get("skipped", "0"))
    except ValueError:
        return None
    return {"reason": reason, "requeued": requeued, "skipped": skipped, "unsent": "unsent" in q}


def url_of(settings: Settings) -> str:
    host = settings.ingest.web_host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.ingest.web_port}"


def serve(settings: Settings) -> None:
    """Run the page with uvicorn until SIGINT or SIGTERM; refuses an open page off loopback.
    The socket is bound here, before uvicorn starts, so a port that cannot be bound is
    `PortUnavailable` (one line at the command line), not uvicorn's log line and exit."""
    check_bind(settings.ingest)
    ingest = settings.ingest
    sock = listen(ingest.web_host, ingest.web_port, "INGEST_WEB_PORT (web --port)")
    try:
        app = create_app(settings)
        log.info("web_started", url=url_of(settings), basic_auth=ingest.web_basic_auth is not None)
        config = uvicorn.Config(
            app,
            host=ingest.web_host,
            port=ingest.web_port,
            log_config=None,  # the service's own logging (configured once, at the entry point)
            server_header=False,
            access_log=False,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
