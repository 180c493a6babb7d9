"""One Runtime per worker process: built when the pool child starts, shared by
its tasks, never inherited across fork(); its client reports each API answer
to its counters."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import signals as celery_signals

from reka_ingest.core.errors import ApiNotFound
from reka_ingest.core.settings import Settings
from reka_ingest.metrics.counters import API_RESPONSES_KEY
from reka_ingest.standin.runner import RunningStandin
from tests.worker.conftest import KEY
from worker import signals
from worker.runtime import ProcessRuntime, Runtime


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], standin: RunningStandin, redis_url: str
) -> Settings:
    return make_settings(api_key=KEY, api_base_url=standin.base_url, redis_url=redis_url)


@pytest.fixture
def process(settings: Settings) -> Iterator[ProcessRuntime]:
    process = ProcessRuntime(lambda: Runtime.start(settings))
    yield process
    process.close()


def test_a_started_runtime_counts_each_api_answer(settings: Settings, redis_url: str) -> None:
    rt = Runtime.start(settings)
    try:
        assert rt.client is rt.client
        with pytest.raises(ApiNotFound):
            rt.client.get("no-such-image")
    finally:
        rt.close()
    assert rt.counters is not None
    assert rt.ledger is not None
    client = redis.Redis.from_url(redis_url)
    assert client.hgetall(API_RESPONSES_KEY) == {b"get:404": b"1"}
    client.close()


def test_a_runtime_without_counters_counts_nothing(settings: Settings, redis_url: str) -> None:
    rt = Runtime.start(settings)
    bare = Runtime(settings, rt.ledger)
    try:
        with pytest.raises(ApiNotFound):
            bare.client.get("no-such-image")
    finally:
        bare.close()
        rt.close()
    client = redis.Redis.from_url(redis_url)
    assert client.exists(API_RESPONSES_KEY) == 0
    client.close()


def test_close_closes_the_client(settings: Settings) -> None:
    rt = Runtime.start(settings)
    client = rt.client
    rt.close()
    assert client.closed


def test_one_runtime_per_process(process: ProcessRuntime) -> None:
    first = process.start()
    assert process.get() is first
    assert process.start() is first
    assert first.client is process.get().client


def test_another_process_builds_its_own_and_leaves_the_inherited_one_open(
    process: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = process.get()
    client = first.client
    monkeypatch.setattr(os, "getpid", lambda: -1)
    second = process.get()
    try:
        assert second is not first
        assert second.client is not client
        assert not client.closed  # another process's client is dropped, never closed
    finally:
        monkeypatch.undo()
        second.close()
        first.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_a_real_fork_the_child_has_its_own_runtime(process: ProcessRuntime) -> None:
    """A forked child builds its own runtime and client, and leaves the parent's open."""
    parent = process.get()
    parent_client = parent.client
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        verdict = b"0"
        try:
            child = process.get()
            mine = child is not parent and child.client is not parent_client
            verdict = b"1" if mine and not parent_client.closed else b"0"
        finally:
            os.write(write_end, verdict)
            os._exit(0)
    os.close(write_end)
    verdict = os.read(read_end, 1)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert verdict == b"1"
    assert process.get() is parent
    assert not parent_client.closed


@pytest.fixture
def process_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-init signal with no receiver but what the test connects (and only
    while it runs); the process-wide logging and task handlers likewise."""
    for signal in (
        celery_signals.worker_process_init,
        celery_signals.setup_logging,
        celery_signals.task_prerun,
        celery_signals.task_postrun,
    ):
        monkeypatch.setattr(signal, "receivers", [])


@pytest.mark.usefixtures("process_init")
def test_the_process_init_signal_starts_the_runtime(settings: Settings) -> None:
    built: list[Runtime] = []

    def build() -> Runtime:
        rt = Runtime.start(settings)
        built.append(rt)
        return rt

    process = ProcessRuntime(build)
    signals.connect(settings, process)
    try:
        celery_signals.worker_process_init.send(sender=None)
        assert len(built) == 1
        assert process.get() is built[0]
    finally:
        process.close()


@pytest.mark.usefixtures("process_init")
def test_a_failed_start_is_logged_and_the_first_task_builds_it(settings: Settings) -> None:
    attempts: list[int] = []

    def build() -> Runtime:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("the ledger is not mounted yet")
        return Runtime.start(settings)

    process = ProcessRuntime(build)
    signals.connect(settings, process)
    try:
        celery_signals.worker_process_init.send(sender=None)  # logs, does not raise
        assert process.get() is process.get()
        assert len(attempts) == 2
    finally:
        process.close()
