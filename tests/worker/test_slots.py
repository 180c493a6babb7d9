"""Request slots (worker.slots): at most `count` holders at once, across threads and
processes; a slot comes free when its holder leaves the block or dies."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import threading
import time
from pathlib import Path

import pytest

from worker.slots import RequestSlots


def test_at_most_count_holders_at_once(tmp_path: Path) -> None:
    slots = RequestSlots(tmp_path / "slots", 2)
    lock = threading.Lock()
    now = peak = 0

    def one() -> None:
        nonlocal now, peak
        with slots.hold():
            with lock:
                now += 1
                peak = max(peak, now)
            time.sleep(0.05)
            with lock:
                now -= 1

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 2


def test_a_freed_slot_is_taken_at_once(tmp_path: Path) -> None:
    slots = RequestSlots(tmp_path / "slots", 1)
    taken = threading.Event()

    def waiter() -> None:
        with slots.hold():
            taken.set()

    with slots.hold() as number:
        assert number == 0
        thread = threading.Thread(target=waiter)
        thread.start()
        assert not taken.wait(0.1)  # the one slot is held
    assert taken.wait(1.0)
    thread.join()


def _hold_forever(folder: str, ready: multiprocessing.synchronize.Event) -> None:
    with RequestSlots(Path(folder), 1).hold():
        ready.set()
        time.sleep(60)


def test_a_dead_holder_frees_its_slot(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_forever, args=(str(tmp_path / "slots"), ready))
    proc.start()
    try:
        assert ready.wait(10)
        slots = RequestSlots(tmp_path / "slots", 1)
        got = threading.Event()

        def take() -> None:
            with slots.hold():
                got.set()

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert not got.wait(0.1)  # held by the other process
        proc.kill()
        proc.join(10)
        assert got.wait(2.0)  # the kernel let go of the dead holder's lock
        thread.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)


def test_count_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="count"):
        RequestSlots(tmp_path, 0)
