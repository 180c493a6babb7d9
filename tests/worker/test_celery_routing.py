"""Where messages land in a real Redis: each task in its own list, and still
there after Redis lost its data (a producer's cached declarations must not
matter)."""

from __future__ import annotations

import redis

from reka_ingest.core.settings import load_settings
from worker.celery_app import (
    CONTROL_QUEUE,
    TASK_POLL_DUE,
    UPLOAD_QUEUE,
    create_app,
    send_upload,
)


def test_each_task_lands_in_its_own_list_even_after_redis_lost_its_data(redis_url: str) -> None:
    app = create_app(load_settings(redis_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    send_upload(app, 1)
    app.send_task(TASK_POLL_DUE)
    assert (client.llen(UPLOAD_QUEUE), client.llen(CONTROL_QUEUE)) == (1, 1)

    client.flushall()  # Redis restarted without its data
    send_upload(app, 2)
    app.send_task(TASK_POLL_DUE)
    assert (client.llen(UPLOAD_QUEUE), client.llen(CONTROL_QUEUE)) == (1, 1)
    client.close()
