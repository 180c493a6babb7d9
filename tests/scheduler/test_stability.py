"""The stability tracker with a fake clock: no files, no sleeping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reka_ingest.core.states import Origin
from scheduler.stability import NS_PER_SECOND, Signature, StabilityTracker, Verdict
from tests.support.clock import Clock


def sig(size: int, mtime: float) -> Signature:
    return (size, int(mtime * NS_PER_SECOND))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tracker(
    clock: Clock, *, stable: float = 0.5, min_age: float = 1.0, give_up: float = 60.0
) -> StabilityTracker:
    return StabilityTracker(
        stable_interval=stable, min_age=min_age, give_up_after=give_up, clock=clock
    )


def run_until_verdict(
    t: StabilityTracker,
    clock: Clock,
    look: Callable[[str], Signature | None],
    *,
    limit: float = 100.0,
) -> Verdict:
    """Advance the clock to each due time and look, as the watcher does."""
    end = clock.now + limit
    while clock.now < end:
        due = t.next_due()
        assert due is not None
        clock.now = max(clock.now, due)
        for path in t.due(100):
            verdict = t.check(path, look(path))
            if verdict is not Verdict.WAIT:
                return verdict
    raise AssertionError("no verdict")


def test_a_steady_old_file_is_whole_after_two_looks(clock: Clock) -> None:
    t = tracker(clock)
    written = clock.now - 30
    t.seen("a.jpg", Origin.EVENT)
    assert t.due(10) == []  # first look only after stable_interval
    clock.now += 0.5
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", sig(100, written)) is Verdict.WAIT  # one look is not enough
    assert t.due(10) == []
    clock.now += 0.5
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", sig(100, written)) is Verdict.WHOLE
    assert "a.jpg" not in t
    assert t.next_due() is None


def test_a_growing_file_is_never_whole_while_it_grows(clock: Clock) -> None:
    t = tracker(clock)
    t.seen("a.jpg", Origin.EVENT)
    for step in range(40):
        clock.now += 0.5
        for path in t.due(10):
            # grows between every pair of looks, mtime always "now"
            assert t.check(path, sig(100 * (step + 1), clock.now)) is Verdict.WAIT
    assert "a.jpg" in t


def test_min_age_holds_a_steady_but_fresh_file(clock: Clock) -> None:
    t = tracker(clock, stable=0.5, min_age=5.0)
    written = clock.now
    t.seen("a.jpg", Origin.EVENT)
    looks: list[float] = []

    def look(_: str) -> Signature:
        looks.append(clock.now)
        return sig(100, written)

    assert run_until_verdict(t, clock, look) is Verdict.WHOLE
    assert clock.now - written >= 5.0
    assert len(looks) == 2  # the second look is scheduled for when the age rule allows


def test_a_close_shortens_the_wait_but_not_the_min_age(clock: Clock) -> None:
    t = tracker(clock, stable=10.0, min_age=1.0)
    written = clock.now
    t.seen("a.jpg", Origin.EVENT)
    t.closed("a.jpg", Origin.EVENT)  # closed after writing
    assert t.next_due() == pytest.approx(written + 1.0)  # not before the age rule can pass
    clock.now = written + 0.999
    assert t.due(10) == []
    clock.now = written + 1.0
    assert t.due(10) == ["a.jpg"]
    # one look at this signature: the close stands in for the second
    assert t.check("a.jpg", sig(100, written)) is Verdict.WHOLE
    assert clock.now - written < 10.0


def test_a_close_still_waits_for_min_age_when_the_writer_was_slow(clock: Clock) -> None:
    t = tracker(clock, stable=10.0, min_age=1.0)
    t.closed("a.jpg", Origin.EVENT)
    clock.now += 1.0
    assert t.due(10) == ["a.jpg"]
    # it was written again after the close was reported (mtime newer than the close)
    assert t.check("a.jpg", sig(100, clock.now - 0.2)) is Verdict.WAIT


def test_a_close_followed_by_more_writes_does_not_count(clock: Clock) -> None:
    t = tracker(clock, stable=10.0, min_age=1.0)
    t.closed("a.jpg", Origin.EVENT)
    closed_at = clock.now
    clock.now += 2.0
    # written again after the close (a writer reopening per chunk), then quiet
    rewritten = closed_at + 0.5
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", sig(200, rewritten)) is Verdict.WAIT
    # without a later close, the full stable_interval applies
    assert t.next_due() == pytest.approx(clock.now + 10.0)


def test_a_file_moved_in_with_an_old_mtime_is_whole_at_the_first_look(clock: Clock) -> None:
    t = tracker(clock, stable=10.0, min_age=1.0)
    t.seen("a.jpg", Origin.EVENT)  # created as a link or a .part elsewhere, then renamed
    t.moved("a.jpg", Origin.EVENT)
    assert t.due(10) == ["a.jpg"]  # at once: no stable_interval, no min_age wait
    assert t.check("a.jpg", sig(100, clock.now - 30)) is Verdict.WHOLE


def test_a_file_moved_in_fresh_still_waits_for_min_age(clock: Clock) -> None:
    t = tracker(clock, stable=10.0, min_age=1.0)
    written = clock.now - 0.2
    t.moved("a.jpg", Origin.EVENT)
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", sig(100, written)) is Verdict.WAIT
    assert t.next_due() == pytest.approx(written + 1.0)  # the age rule, not stable_interval
    clock.now = written + 1.0
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", sig(100, written)) is Verdict.WHOLE


def test_a_file_written_after_its_move_in_is_not_taken_on_the_move(clock: Clock) -> None:
    t = tracker(clock, stable=10.0, min_age=1.0)
    t.moved("a.jpg", Origin.EVENT)
    moved_at = clock.now
    clock.now += 2.0
    assert t.due(10) == ["a.jpg"]
    # written again after the move (mtime newer than it): the full stable_interval applies
    assert t.check("a.jpg", sig(200, moved_at + 0.5)) is Verdict.WAIT
    assert t.next_due() == pytest.approx(clock.now + 10.0)


def test_a_future_mtime_falls_back_to_how_long_we_saw_it_unchanged(clock: Clock) -> None:
    t = tracker(clock, stable=0.5, min_age=2.0)
    skewed = clock.now + 3600  # a share whose clock runs an hour ahead
    t.seen("a.jpg", Origin.SCAN, sig(100, skewed))
    start = clock.now
    assert run_until_verdict(t, clock, lambda _: sig(100, skewed)) is Verdict.WHOLE
    assert clock.now - start >= 2.0


def test_a_file_that_never_settles_is_given_up_on(clock: Clock) -> None:
    t = tracker(clock, give_up=30.0)
    first = clock.now
    t.seen("a.jpg", Origin.EVENT)
    size = iter(range(1, 10_000))
    verdict = run_until_verdict(t, clock, lambda _: sig(next(size), clock.now))
    assert verdict is Verdict.NEVER_STABLE
    assert 30.0 <= clock.now - first < 31.0
    assert "a.jpg" not in t


def test_gone_files_are_forgotten(clock: Clock) -> None:
    t = tracker(clock)
    t.seen("a.jpg", Origin.EVENT)
    clock.now += 1
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", None) is Verdict.GONE
    assert len(t) == 0


def test_a_scan_sighting_counts_as_the_first_look(clock: Clock) -> None:
    t = tracker(clock)
    old = clock.now - 100
    assert t.seen("a.jpg", Origin.SCAN, sig(5, old)) is True
    assert t.seen("a.jpg", Origin.EVENT) is False  # already tracked: no reschedule
    assert t.origin("a.jpg") == "scan"
    clock.now += 0.5
    assert t.due(10) == ["a.jpg"]
    assert t.check("a.jpg", sig(5, old)) is Verdict.WHOLE


def test_due_hands_out_each_path_once_until_checked(clock: Clock) -> None:
    t = tracker(clock)
    for i in range(5):
        t.seen(f"{i}.jpg", Origin.EVENT)
        t.closed(f"{i}.jpg", Origin.EVENT)  # a second heap item for the same path
    clock.now += 1
    first = t.due(3)
    rest = t.due(10)
    assert len(first) == 3
    assert sorted(first + rest) == [f"{i}.jpg" for i in range(5)]
    assert t.due(10) == []
