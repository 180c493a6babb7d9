"""`reka-ingest worker`, `beat`, `flower`: thin wrappers over `celery -A APP ...`
(`worker.celery_app` for the worker, `scheduler.app` for beat and Flower).

Each replaces this process with Celery's own command (exec), so signals and
exit codes are Celery's. Extra arguments pass through to Celery.
"""

from __future__ import annotations

import os

import typer

from reka_ingest.cli.processes import beat_argv, flower_argv, flower_env, worker_argv
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
    # The pool's processes read it too: it is how many requests they keep in flight.
    env = {"INGEST_WORKER_CONCURRENCY": str(concurrency)} if concurrency else None
    _exec(worker_argv(settings, concurrency=concurrency or None), ctx.args, env)


def beat(ctx: typer.Context) -> None:
    """Run Celery beat (exactly one per deployment): indexing polls and batch sweeps."""
    _exec(beat_argv(load_settings().ingest), ctx.args)


def flower(ctx: typer.Context) -> None:
    """Run Flower; off loopback it refuses to start without INGEST_FLOWER_BASIC_AUTH."""
    settings = load_settings().ingest
    _exec(flower_argv(settings), ctx.args, flower_env(settings))
