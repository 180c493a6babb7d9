"""`reka-ingest worker`, `beat`, `flower`: thin wrappers over `celery -A APP ...`
(`worker.celery_app` for the worker, `scheduler.app` for beat and Flower).

Each replaces this process with Celery's own command (exec), so signals and
exit codes are Celery's. Extra arguments pass through to Celery. Before the
exec, each checks what it will write and where it will listen
(reka_ingest.core.places): after it, a read-only data folder or a taken port
would be Celery's traceback, not one line.
"""

from __future__ import annotations

import os

import typer

from reka_ingest.cli.processes import (
    BEAT_SCHEDULE,
    FLOWER_DB,
    beat_argv,
    flower_argv,
    flower_env,
    worker_argv,
)
from reka_ingest.core.places import require_free_port, require_writable, require_writable_folder
from reka_ingest.core.settings import load_settings

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _exec(argv: list[str], extra: list[str], env: dict[str, str] | None = None) -> None:
    os.execve(argv[0], argv + extra, os.environ | (env or {}))  # noqa: S606 - our interpreter


def worker(
    ctx: typer.Context,
    concurrency: int = typer.Option(
        0, help="Upload requests in flight; 0 = INGEST_WORKER_CONCURRENCY."
    ),
) -> None:
    """Run a Celery worker for uploads and polls (extra args go to celery worker)."""
    settings = load_settings().ingest
    for folder in (settings.work_dir, settings.done_path, settings.failed_path):
        require_writable_folder(folder)  # where its uploads move files and write reasons
    # The pool's processes read it too: it is how many requests they keep in flight.
    env = {"INGEST_WORKER_CONCURRENCY": str(concurrency)} if concurrency else None
    _exec(worker_argv(settings, concurrency=concurrency or None), ctx.args, env)


def beat(ctx: typer.Context) -> None:
    """Run Celery beat (exactly one per deployment): indexing polls and batch sweeps."""
    settings = load_settings().ingest
    require_writable(settings.data_dir / BEAT_SCHEDULE)
    _exec(beat_argv(settings), ctx.args)


def flower(ctx: typer.Context) -> None:
    """Run Flower; off loopback it refuses to start without INGEST_FLOWER_BASIC_AUTH."""
    settings = load_settings().ingest
    env = flower_env(settings)
    require_writable(settings.data_dir / FLOWER_DB)
    require_free_port(settings.flower_host, settings.flower_port, "INGEST_FLOWER_PORT")
    _exec(flower_argv(settings), ctx.args, env)
