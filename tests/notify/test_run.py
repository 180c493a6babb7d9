"""Notifications in a real run: the stand-in, a Celery worker, beat and the
watcher as processes; a folder dropped into the inbox is announced once as
settled, with the right counts, by the worker's post task (retried for real
after the webhook's first answer, a 500)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import write_image
from tests.support.service import Service, wait_for
from tests.support.webhook import Receiver, receiving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def hooked(tmp_path: Path, redis_url: str) -> Iterator[tuple[Service, Receiver]]:
    with receiving(fail_first=1) as receiver:
        svc = Service(
            tmp_path,
            redis_url,
            env={"INGEST_NOTIFY_URL": receiver.url("/reka"), "INGEST_NOTIFY_SETTLE_AFTER": "2"},
            standin_env={"STANDIN_INDEX_DELAY": "0.5"},
        )
        try:
            yield svc, receiver
        finally:
            svc.stop()


def test_a_dropped_folder_is_announced_once_settled(hooked: tuple[Service, Receiver]) -> None:
    service, receiver = hooked
    service.start()
    for i in range(3):
        write_image(service.inbox / "shoot" / f"img-{i}.jpg", seed=500 + i)
    (service.inbox / "shoot" / "broken.jpg").write_bytes(b"this is not a picture at all")
    write_image(service.inbox / "loose.png", seed=600)
    service.wait_terminal(5, timeout=120)

    def both_announced() -> bool:
        return len({b["id"] for b in receiver.events("drop_settled")}) >= 2

    wait_for(both_announced, 60, "two drop_settled events", on_timeout=service.diagnose)
    time.sleep(3)  # three more sweeps: nothing is announced again
    # The first post was answered 500 and retried by the worker: one copy more, no other.
    assert len(receiver.posts) == 3
    assert receiver.posts[0].body in receiver.bodies[1:]
    events = {b["folder"]: b for b in receiver.events("drop_settled")}
    assert set(events) == {"shoot", "."}
    shoot = events["shoot"]
    assert shoot["files"] == 4
    assert shoot["counts"] == {"indexed": 3, "failed": 1}
    assert shoot["reasons"] == {"not_an_image": 1}
    assert shoot["root"] == str(service.inbox)
    assert shoot["service"] == "reka-ingest"
    assert shoot["deployment"] == str(service.data_dir.resolve())
    assert events["."]["counts"] == {"indexed": 1}
    worker_log = (service.data_dir / "logs" / "worker.log").read_text(errors="replace")
    assert '"notify_failed"' in worker_log
    assert '"notify_sent"' in worker_log
