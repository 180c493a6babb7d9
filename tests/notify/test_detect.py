"""Which events beat's notify sweep finds, and that each is found once: two
detectors (two workers' runtimes) on the same Redis and ledger, one after the
other and at the same moment, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from reka_ingest.core.constants import NOTIFY_KEY
from reka_ingest.core.errors import RateLimitInfo
from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import FileState, Reason
from scheduler.beat import beat_schedule
from tests.notify.conftest import add_files, finish
from tests.support.clock import Clock
from worker.notify import (
    DROP_SETTLED,
    FAILURES_THRESHOLD,
    QUOTA_EXHAUSTED,
    QUOTA_REFILLED,
    notify_sweep,
)
from worker.runtime import Runtime

Bodies = list[dict[str, Any]]
ENVELOPE = {"event", "id", "at", "service", "deployment"}


def sweep(rt: Runtime) -> Bodies:
    sent: Bodies = []
    notify_sweep(rt, sent.append)
    return sent


def of(bodies: Bodies, event: str) -> Bodies:
    return [b for b in bodies if b["event"] == event]


def test_a_folder_drop_is_announced_once_when_every_file_is_final_and_quiet(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    one, two = make_rt(), make_rt()
    inbox = str(one.settings.ingest.inbox)
    cams = add_files(one, ["cams/a.jpg", "cams/b.jpg", "cams/deep/c.jpg", "cams/d.jpg"])
    loose = add_files(one, ["loose.jpg"])
    bad = add_files(one, ["cams/bad.jpg"], reason=Reason.NOT_AN_IMAGE)  # failed at intake
    clock.advance(5)
    finish(one, cams[:2], FileState.INDEXED)
    finish(one, cams[2:3], FileState.DUPLICATE, Reason.DUPLICATE_CONTENT)
    finish(one, loose, FileState.INDEXED)
    clock.advance(40)
    # cams/d.jpg is still uploading: cams has not settled; the loose file has.
    first = sweep(one) + sweep(two)
    assert [(b["folder"], b["root"], b["counts"]) for b in of(first, DROP_SETTLED)] == [
        (".", inbox, {"indexed": 1})
    ]

    clock.advance(10)
    finish(one, cams[3:], FileState.FAILED, Reason.INDEXING_FAILED)
    clock.advance(29)  # quiet for 29 s: not yet
    assert of(sweep(one) + sweep(two), DROP_SETTLED) == []
    clock.advance(2)
    settled = sweep(two) + sweep(one) + sweep(two)
    assert len(settled) == 1
    body = settled[0]
    assert set(body) == ENVELOPE | {
        "folder",
        "root",
        "files",
        "counts",
        "reasons",
        "first_seen_at",
        "last_finished_at",
        "file_ids",
    }
    assert body["event"] == DROP_SETTLED
    assert body["service"] == "reka-ingest"
    assert body["deployment"] == str(one.settings.ingest.data_dir.resolve())
    assert body["folder"] == "cams"
    assert body["files"] == 5
    assert body["counts"] == {"indexed": 2, "duplicate": 1, "failed": 2}
    assert body["reasons"] == {"indexing_failed": 1, "not_an_image": 1}
    assert body["first_seen_at"] == "2023-11-14T22:13:20Z"  # clock's start, 1_700_000_000
    assert body["last_finished_at"] == "2023-11-14T22:14:15Z"  # + 55 s
    assert body["at"] == "2023-11-14T22:14:46Z"
    assert body["file_ids"] == {"after": 0, "through": max(cams + bad)}
    assert body["id"] == f"drop_settled:{body['id'].split(':')[1]}:{max(cams + bad)}"

    # Files trickling in later make the folder's next drop, of those files alone.
    clock.advance(100)
    late = add_files(one, ["cams/e.jpg", "cams/f.jpg"])
    clock.advance(10)
    finish(one, late[:1], FileState.INDEXED)
    clock.advance(31)
    assert sweep(one) == []  # f.jpg not final
    finish(one, late[1:], FileState.INDEXED)
    clock.advance(31)
    again = sweep(one) + sweep(two)
    assert [(b["folder"], b["files"], b["counts"], b["file_ids"]) for b in again] == [
        ("cams", 2, {"indexed": 2}, {"after": max(cams + bad), "through": max(late)})
    ]
    clock.advance(3600)
    assert sweep(one) + sweep(two) == []


def test_two_detectors_at_the_same_moment_announce_each_drop_once(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    runtimes = [make_rt() for _ in range(4)]
    folders = [f"shoot-{i}" for i in range(6)]
    for folder in folders:
        ids = add_files(runtimes[0], [f"{folder}/{n}.jpg" for n in range(3)])
        finish(runtimes[0], ids, FileState.INDEXED)
    clock.advance(60)
    start = threading.Barrier(len(runtimes))
    found: list[Bodies] = [[] for _ in runtimes]

    def detect(i: int) -> None:
        start.wait()
        found[i] = sweep(runtimes[i])

    threads = [threading.Thread(target=detect, args=(i,)) for i in range(len(runtimes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    bodies = [b for bs in found for b in bs]
    assert sorted(b["folder"] for b in bodies) == folders
    assert all(b["counts"] == {"indexed": 3} for b in bodies)


def test_a_backfilled_tree_is_grouped_by_its_own_root(
    make_rt: Callable[..., Runtime], clock: Clock, tmp_path: Path
) -> None:
    rt = make_rt()
    tree = str(tmp_path / "archive")
    inbox_ids = add_files(rt, ["2019/a.jpg"])
    tree_ids = add_files(rt, ["2019/a.jpg", "2019/b.jpg"], root=tree)
    finish(rt, inbox_ids + tree_ids, FileState.INDEXED)
    clock.advance(31)
    bodies = sorted(sweep(rt), key=lambda b: (b["root"], b["folder"]))
    assert [(b["root"], b["folder"], b["files"]) for b in bodies] == sorted(
        [(tree, "2019", 2), (str(rt.settings.ingest.inbox), "2019", 1)]
    )


def test_failures_past_the_threshold_make_one_event_per_window(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    one = make_rt(notify_failures=4, notify_window=600)
    two = make_rt(notify_failures=4, notify_window=600)
    add_files(one, ["a/1.jpg", "a/2.jpg"], reason=Reason.NOT_AN_IMAGE)
    assert of(sweep(one), FAILURES_THRESHOLD) == []  # 2 < 4
    clock.advance(10)
    add_files(one, ["a/3.jpg"], reason=Reason.TOO_LARGE)
    add_files(one, ["b/4.jpg", "b/5.jpg", "b/6.jpg"], reason=Reason.NOT_AN_IMAGE)
    add_files(one, ["b/7.jpg"], reason=Reason.EMPTY_FILE)
    found = of(sweep(two) + sweep(one) + sweep(two), FAILURES_THRESHOLD)
    assert len(found) == 1
    body = found[0]
    assert set(body) == ENVELOPE | {
        "count",
        "threshold",
        "window_seconds",
        "since",
        "until",
        "reasons",
        "examples",
    }
    assert body["count"] == 7
    assert body["threshold"] == 4
    assert body["window_seconds"] == 600
    assert body["reasons"] == [
        {"reason": "not_an_image", "count": 5},
        {"reason": "empty_file", "count": 1},
        {"reason": "too_large", "count": 1},
    ]
    assert len(body["examples"]) == 5
    assert {"path": "b/7.jpg", "reason": "empty_file"} in body["examples"]
    assert all(set(e) == {"path", "reason"} for e in body["examples"])

    # More failures within the window: no second event.
    clock.advance(300)
    add_files(one, [f"c/{i}.jpg" for i in range(10)], reason=Reason.UNREADABLE)
    assert of(sweep(one) + sweep(two), FAILURES_THRESHOLD) == []
    # The window passes: its marker expires on Redis's clock (see the next test), so
    # it is dropped here as that time passing would.
    redis.Redis.from_url(one.settings.ingest.broker_url).delete(f"{NOTIFY_KEY}:failures")
    clock.advance(301)
    add_files(one, [f"d/{i}.jpg" for i in range(4)], reason=Reason.UNREADABLE)
    later = of(sweep(two) + sweep(one), FAILURES_THRESHOLD)
    assert [b["count"] for b in later] == [14]  # the last 600 s: c/ and d/
    assert later[0]["reasons"] == [{"reason": "unreadable", "count": 14}]


def test_the_failures_marker_expires_with_the_window(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    rt = make_rt(notify_failures=1, notify_window=1.0)
    add_files(rt, ["x.jpg"], reason=Reason.NOT_AN_IMAGE)
    assert len(of(sweep(rt), FAILURES_THRESHOLD)) == 1
    client = redis.Redis.from_url(rt.settings.ingest.broker_url)
    assert 0 < client.pttl(f"{NOTIFY_KEY}:failures") <= 1000


def test_quota_exhausted_then_refilled_each_announced_once(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    one = make_rt(uploads_per_day=2, notify_window=600)
    two = make_rt(uploads_per_day=2, notify_window=600)
    assert sweep(one) + sweep(two) == []  # requests left: nothing to say
    start = clock()
    one.budget.try_acquire()
    clock.advance(60)
    two.budget.try_acquire()
    found = sweep(two) + sweep(one) + sweep(two)
    assert [b["event"] for b in found] == [QUOTA_EXHAUSTED]
    out = found[0]
    assert set(out) == ENVELOPE | {"why", "limit", "used", "remaining", "refills_at"}
    assert (out["why"], out["limit"], out["used"], out["remaining"]) == ("daily_limit", 2, 2, 0)
    assert out["refills_at"] == "2023-11-15T22:13:20Z"  # the first request leaves the 24 h
    assert out["at"] == "2023-11-14T22:14:20Z"

    clock.advance(start + 24 * 3600 + 1 - clock())
    found = sweep(one) + sweep(two)
    assert [b["event"] for b in found] == [QUOTA_REFILLED]
    back = found[0]
    assert set(back) == ENVELOPE | {"limit", "used", "remaining", "exhausted_at"}
    assert (back["limit"], back["used"], back["remaining"]) == (2, 1, 1)
    assert back["exhausted_at"] == "2023-11-14T22:14:20Z"

    # The freed request is taken at once: used up again within the window, folded.
    one.budget.try_acquire()
    clock.advance(30)
    assert sweep(one) + sweep(two) == []
    clock.advance(600)  # past the hold; the request of start + 60 has left the window
    assert sweep(one) + sweep(two) == []
    two.budget.try_acquire()
    assert [b["event"] for b in sweep(two) + sweep(one)] == [QUOTA_EXHAUSTED]


def test_a_long_pause_from_the_api_is_a_spent_quota(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    rt = make_rt(uploads_per_day=0)
    rt.budget.follow(RateLimitInfo(remaining=0, reset_seconds=5), now=clock())
    assert sweep(rt) == []  # a burst limit, not the quota
    clock.advance(10)
    rt.budget.follow(RateLimitInfo(remaining=0, reset_seconds=7200), now=clock())
    found = sweep(rt)
    assert [(b["event"], b["why"]) for b in found] == [(QUOTA_EXHAUSTED, "server_pause")]
    assert found[0]["refills_at"] == "2023-11-15T00:13:30Z"
    clock.advance(7201)
    assert [b["event"] for b in sweep(rt)] == [QUOTA_REFILLED]


def test_an_enqueue_that_fails_is_claimed_again_by_the_next_sweep(
    make_rt: Callable[..., Runtime], clock: Clock
) -> None:
    rt = make_rt(notify_failures=1)
    ids = add_files(rt, ["f/1.jpg"])
    finish(rt, ids, FileState.FAILED, Reason.NOT_AN_IMAGE)
    clock.advance(31)

    def broken(_: dict[str, Any]) -> None:
        raise ConnectionError("broker down")

    assert notify_sweep(rt, broken) == []
    bodies = sweep(rt)
    assert sorted(b["event"] for b in bodies) == [DROP_SETTLED, FAILURES_THRESHOLD]
    assert sweep(rt) == []


def test_off_without_a_url_reads_nothing(make_settings: Callable[..., Any], clock: Clock) -> None:
    # A Redis that is not there and a ledger never opened: the sweep must touch neither.
    settings = make_settings(redis_url="redis://127.0.0.1:9/0")
    assert settings.ingest.notify_url is None

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the sweep read {name}")

    rt = Runtime(settings, Untouchable(), clock=clock)  # type: ignore[arg-type]
    assert notify_sweep(rt, lambda _: pytest.fail("sent")) == []
    assert "notify" not in beat_schedule(settings.ingest)
    on = load_settings(notify_url="https://hooks.example.com/x")
    entry = beat_schedule(on.ingest)["notify"]
    assert entry["task"] == "reka_ingest.notify_sweep"
    assert entry["schedule"] == on.ingest.sweep_interval
