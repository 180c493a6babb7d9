"""Posting one event to a real webhook on loopback through the Celery task (run
eagerly, so its retries run at once): JSON with its content type, retried after
500s until it goes through, given up after a bounded number of tries, not
retried after a refusal, and never longer than the timeout allows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from pydantic import SecretStr

from reka_ingest.core.constants import NOTIFY_MAX_RETRIES
from reka_ingest.core.queues import TASK_NOTIFY, sender_config
from reka_ingest.core.settings import Settings
from reka_ingest.ledger import open_ledger
from tests.support.webhook import Receiver, receiving
from worker import tasks
from worker.celery_app import worker_config
from worker.notify import Notifier, NotifyRejected, NotifyUnavailable
from worker.runtime import Runtime

BODY: dict[str, Any] = {
    "event": "drop_settled",
    "id": "drop_settled:abc:7",
    "at": "2025-05-01T12:00:00Z",
    "service": "reka-ingest",
    "deployment": "/srv/reka",
    "folder": "cams",
    "counts": {"indexed": 7},
}


@pytest.fixture
def post_task(
    make_settings: Callable[..., Settings], redis_url: str
) -> Iterator[Callable[[Receiver, float], Any]]:
    """The worker's notify task on a Celery app of its own, posting to a receiver."""
    made: list[Runtime] = []

    def make(receiver: Receiver, timeout: float = 5.0) -> Any:
        settings = make_settings(
            redis_url=redis_url, notify_url=receiver.url("/hook"), notify_timeout=timeout
        )
        rt = Runtime(settings, open_ledger(settings.ingest.ledger_url))
        made.append(rt)
        app = Celery("notify-test", set_as_current=False)
        app.conf.update(sender_config(settings.ingest) | worker_config(settings))
        tasks.register(app, lambda: rt)
        return app.tasks[TASK_NOTIFY]

    yield make
    for rt in made:
        rt.close()


def test_an_event_is_posted_as_json() -> None:
    with receiving() as receiver:
        notifier = Notifier(SecretStr(receiver.url("/in")), timeout=5)
        try:
            assert notifier.post(BODY) == 200
        finally:
            notifier.close()
    [post] = receiver.posts
    assert post.path == "/in"
    assert post.headers["content-type"] == "application/json"
    assert post.body == BODY


def test_the_task_retries_after_500s_then_delivers(post_task: Callable[..., Any]) -> None:
    with receiving(fail_first=2) as receiver:
        result = post_task(receiver).apply(args=(BODY,))
    assert result.successful(), result.traceback
    assert len(receiver.posts) == 3
    assert receiver.bodies == [BODY] * 3  # the same event, with its id, each time


def test_the_task_gives_up_after_a_bounded_number_of_tries(post_task: Callable[..., Any]) -> None:
    with receiving(fail_first=1000) as receiver:
        result = post_task(receiver).apply(args=(BODY,))
    assert result.failed()
    assert isinstance(result.result, NotifyUnavailable)
    assert len(receiver.posts) == NOTIFY_MAX_RETRIES + 1


def test_a_refusal_is_not_retried(post_task: Callable[..., Any]) -> None:
    with receiving(fail_first=1000, fail_status=404) as receiver:
        result = post_task(receiver).apply(args=(BODY,))
        notifier = Notifier(SecretStr(receiver.url()), timeout=5)
        with pytest.raises(NotifyRejected, match="answered 404"):
            notifier.post(BODY)
        notifier.close()
    assert result.successful()  # logged as refused; nothing to retry
    assert len(receiver.posts) == 2  # the task's one try, and the direct post


def test_a_webhook_that_does_not_answer_costs_the_timeout_and_no_more(
    post_task: Callable[..., Any],
) -> None:
    timeout = 0.3
    with receiving(delay=3.0) as receiver:
        notifier = Notifier(SecretStr(receiver.url()), timeout=timeout)
        started = time.monotonic()
        with pytest.raises(NotifyUnavailable, match="did not answer in time"):
            notifier.post(BODY)
        assert time.monotonic() - started < timeout + 1.0
        notifier.close()

        started = time.monotonic()
        result = post_task(receiver, timeout).apply(args=(BODY,))
        spent = time.monotonic() - started
    assert result.failed()
    tries = NOTIFY_MAX_RETRIES + 1
    assert len(receiver.posts) == 1 + tries
    assert spent < tries * (timeout + 0.5)


def test_a_webhook_that_is_not_listening_is_tried_again() -> None:
    with receiving() as receiver:
        url = receiver.url()
    notifier = Notifier(SecretStr(url), timeout=2)
    with pytest.raises(NotifyUnavailable, match="no answer from the webhook"):
        notifier.post(BODY)
    notifier.close()
