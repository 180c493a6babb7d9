"""Where messages land in a real Redis: each task in its own list, and still
there after Redis lost its data (a producer's cached declarations must not
matter). The scheduler's producer app and the worker's app route alike: both
are built from `reka_ingest.core.queues`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from celery import Celery

from reka_ingest.core.queues import (
    CONTROL_QUEUE,
    TASK_POLL_DUE,
    TASK_QUEUES,
    TASK_SWEEP_BATCHES,
    TASK_UPLOAD_BATCH,
    UPLOAD_QUEUE,
    send_upload,
)
from reka_ingest.core.settings import Settings, load_settings
from scheduler.app import build as beat_app
from scheduler.enqueue import producer_app
from worker.celery_app import create_app


@pytest.mark.parametrize("make_app", [producer_app, create_app], ids=["producer", "worker"])
def test_each_task_lands_in_its_own_list_even_after_redis_lost_its_data(
    redis_url: str, make_app: Callable[[Settings], Celery]
) -> None:
    app = make_app(load_settings(redis_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    send_upload(app, 1)
    app.send_task(TASK_POLL_DUE)
    assert (client.llen(UPLOAD_QUEUE), client.llen(CONTROL_QUEUE)) == (1, 1)

    client.flushall()  # Redis restarted without its data
    send_upload(app, 2)
    app.send_task(TASK_POLL_DUE)
    assert (client.llen(UPLOAD_QUEUE), client.llen(CONTROL_QUEUE)) == (1, 1)
    client.close()
    app.close()


def test_the_worker_registers_every_task_the_scheduler_names(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    worker = create_app(settings)
    assert set(TASK_QUEUES) <= set(worker.tasks)
    schedule = beat_app(settings).conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} == {TASK_POLL_DUE, TASK_SWEEP_BATCHES}
    assert TASK_UPLOAD_BATCH in worker.tasks
    assert not any(name.startswith("reka_ingest.") for name in producer_app(settings).tasks)
