"""No secret in any event, in any message on the broker or in any log line: an API
key, a Redis with a password and a webhook URL with a token in its user part,
its path and its query; every event made for real (sweep, broker, task, POST)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog
from celery import Celery

from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.errors import SettingsError
from reka_ingest.core.logs import configure_logging
from reka_ingest.core.queues import CONTROL_QUEUE, TASK_NOTIFY, send_notify, sender_config
from reka_ingest.core.settings import LogFormat, effective, load_settings, mask_webhook
from reka_ingest.core.states import FileState, Reason
from reka_ingest.ledger import open_ledger
from tests.notify.conftest import add_files, finish
from tests.support.clock import Clock
from tests.support.webhook import receiving
from worker import tasks
from worker.celery_app import worker_config
from worker.notify import EVENTS, notify_sweep
from worker.runtime import Runtime

API_KEY = "sk-live-api-key-d41d8cd9"
REDIS_AUTH = "redis-pass-8f14e45f"
HOOK_USER_KEY = "user-tok-c9f0f895"
HOOK_PATH_KEY = "path-tok-45c48cce"
HOOK_QUERY_KEY = "query-tok-d3d94468"
SECRETS = (API_KEY, REDIS_AUTH, HOOK_USER_KEY, HOOK_PATH_KEY, HOOK_QUERY_KEY)


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[str]:
    with BundledRedis(tmp_path / "redis", free_port(), password=REDIS_AUTH, persist=False) as r:
        yield r.url


@pytest.fixture
def log_text(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("DEBUG", LogFormat.JSON)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def test_no_secret_in_events_messages_or_logs(
    tmp_path: Path, locked_redis: str, log_text: io.StringIO
) -> None:
    clock = Clock(1_700_000_000.0)
    with receiving(fail_first=1) as receiver:
        hook = (
            f"http://hooks:{HOOK_USER_KEY}@127.0.0.1:{receiver.port}"
            f"/services/{HOOK_PATH_KEY}?token={HOOK_QUERY_KEY}"
        )
        settings = load_settings(
            api_key=API_KEY,
            redis_url=locked_redis,
            notify_url=hook,
            notify_failures=1,
            notify_settle_after=5,
            uploads_per_day=1,
            data_dir=tmp_path / "var",
            inbox=tmp_path / "inbox",
        )
        rt = Runtime(settings, open_ledger(settings.ingest.ledger_url), clock=clock)
        app = Celery("notify-secrets", set_as_current=False)
        app.conf.update(sender_config(settings.ingest) | worker_config(settings))
        tasks.register(app, lambda: rt)
        try:
            ids = add_files(rt, ["cams/a.jpg", "cams/b.jpg"])
            finish(rt, ids[:1], FileState.INDEXED)
            finish(rt, ids[1:], FileState.FAILED, Reason.NOT_AN_IMAGE)
            rt.budget.try_acquire()
            clock.advance(10)
            bodies = notify_sweep(rt, lambda body: send_notify(app, body))
            clock.advance(24 * 3600)
            bodies += notify_sweep(rt, lambda body: send_notify(app, body))
            assert sorted(b["event"] for b in bodies) == sorted(EVENTS)

            broker = redis.Redis.from_url(locked_redis)
            messages = [m.decode() for m in broker.lrange(CONTROL_QUEUE, 0, -1)]
            assert len(messages) == len(EVENTS)
            for body in bodies:  # each event goes through the worker's task, for real
                assert app.tasks[TASK_NOTIFY].apply(args=(body,)).successful()
        finally:
            rt.close()
        assert len(receiver.posts) == len(EVENTS) + 1  # the first answered 500, then retried
        assert sorted(receiver.bodies[1:], key=lambda b: b["event"]) == sorted(
            bodies, key=lambda b: b["event"]
        )

    logs = log_text.getvalue()
    assert '"notify_sent"' in logs
    assert '"notify_failed"' in logs
    shown = mask_webhook(hook)
    assert shown == f"http://***@127.0.0.1:{receiver.port}/services/***?***"
    assert shown in logs
    config = json.dumps(effective(settings))
    assert shown in config
    everything = {
        "event bodies": json.dumps(receiver.bodies),
        "broker messages": "\n".join(messages),
        "logs": logs,
        "`reka-ingest config`": config,
    }
    for where, text in everything.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in the {where}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("https://hooks.example.com/", "https://hooks.example.com"),
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
        ("https://hooks.example.com/services/T0/B0/xyz", "https://hooks.example.com/services/***"),
        ("https://a:b@hooks.example.com:8443/x?t=1", "https://***@hooks.example.com:8443/x?***"),
        ("http://[::1]:9000/h/tok", "http://[::1]:9000/h/***"),
    ],
)
def test_a_webhook_url_is_shown_without_its_token(url: str, shown: str) -> None:
    assert mask_webhook(url) == shown


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "https:///only-a-path"]
)
def test_a_webhook_url_that_is_not_http_stops_the_start_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError, match=r"INGEST_NOTIFY_URL: .*http") as err:
        load_settings(notify_url=url)
    assert url not in str(err.value)


def test_an_empty_webhook_url_is_off() -> None:
    assert load_settings(notify_url="  ").ingest.notify_url is None
