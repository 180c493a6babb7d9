"""A batch held by a process of this machine that no longer runs is taken back at
once, by the next claim and by the beat sweep, not INGEST_BATCH_LEASE later; a
batch whose holder runs, or cannot be judged (another machine), keeps its lease.
The holders are real processes: one claims and exits, one claims and stays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reka_ingest.core import holder
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import create_batch, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.reconcile import batches_to_send
from reka_ingest.ledger.schema import Batch
from reka_ingest.ledger.uploads import claim_batch, mark_uploading
from tests.support.new_files import new_files

REPO = Path(__file__).resolve().parents[2]
NOW = 1000.0
LEASE = 600.0  # the default: a dead holder's batch must not wait this long

CLAIM = """
import sys, time
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.uploads import claim_batch, mark_uploading
ledger = open_ledger(sys.argv[1], migrate=False)
claimed = claim_batch(ledger, int(sys.argv[2]), now=float(sys.argv[3]), lease=float(sys.argv[4]))
mark_uploading(ledger, [f.id for f in claimed.files], now=float(sys.argv[3]), hold=claimed.hold)
print("claimed", flush=True)
if sys.argv[5] == "stay":
    time.sleep(60)
"""


def _batch(ledger: Ledger) -> int:
    rows = record_files(ledger, new_files([10] * 3, seen_at=NOW), now=NOW)
    return create_batch(ledger, [r.file_id for r in rows], now=NOW)


def _claim_in_another_process(url: str, batch: int, *, stay: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLAIM,
            url,
            str(batch),
            str(NOW),
            str(LEASE),
            "stay" if stay else "exit",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "claimed"
    return proc


def _due(ledger: Ledger) -> list[int]:
    return batches_to_send(ledger, now=NOW + 1, requeue_after=LEASE, limit=100)


def test_a_dead_holders_batch_is_taken_at_once_with_its_files_flagged(
    ledger: Ledger, database_url: str
) -> None:
    batch = _batch(ledger)
    proc = _claim_in_another_process(database_url, batch, stay=False)
    proc.wait(30)  # the holder is gone (a worker killed in the middle of its request)
    assert _due(ledger) == [batch]  # the sweep sends it now, not a lease later
    assert _due(ledger) == []  # once: not again at every tick until a worker takes it
    claimed = claim_batch(ledger, batch, now=NOW + 1, lease=LEASE)
    assert claimed is not None and claimed.outcome_unknown and claimed.attempt == 2
    assert len(claimed.files) == 3
    assert all(f.possible_duplicate for f in list_files(ledger))
    with ledger.read() as s:
        row = s.get(Batch, batch)
        assert row is not None and row.claimed_by == holder.this_process()
    assert _due(ledger) == []  # held now by a live process: this one


def test_a_live_holder_keeps_its_batch_until_its_lease_runs_out(
    ledger: Ledger, database_url: str
) -> None:
    batch = _batch(ledger)
    proc = _claim_in_another_process(database_url, batch, stay=True)
    try:
        assert _due(ledger) == []
        assert claim_batch(ledger, batch, now=NOW + 1, lease=LEASE) is None
        assert {f.state for f in list_files(ledger)} == {FileState.UPLOADING}
        later = NOW + LEASE + 1  # the lease rule still applies to a live holder
        assert claim_batch(ledger, batch, now=later, lease=LEASE) is not None
    finally:
        proc.kill()
        proc.wait(30)


def test_a_holder_of_another_machine_keeps_its_lease(ledger: Ledger) -> None:
    batch = _batch(ledger)
    claimed = claim_batch(ledger, batch, now=NOW, lease=LEASE)
    assert claimed is not None
    mark_uploading(ledger, [f.id for f in claimed.files], now=NOW, hold=claimed.hold)
    with ledger.write() as s:
        row = s.get(Batch, batch)
        assert row is not None
        row.claimed_by = "another-boot/pid:[4026531836]/1/1"  # pid 1 elsewhere: unknown
    assert _due(ledger) == []
    assert claim_batch(ledger, batch, now=NOW + 1, lease=LEASE) is None


@given(st.text(max_size=200))
def test_a_holder_that_cannot_be_read_is_never_judged_gone(text: str) -> None:
    own = holder.this_process()
    assert own is not None
    machine = own.rsplit("/", 2)[0]
    assert not holder.gone(text) or text.startswith(machine + "/")
    assert not holder.gone(own)


@pytest.mark.parametrize("state", ["exit", "zombie"])
def test_a_process_that_ended_is_gone_and_a_reused_pid_is_not_its_holder(state: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from reka_ingest.core import holder; print(holder.this_process())"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    named = proc.stdout.readline().strip()
    if state == "zombie":  # dead, not reaped yet: /proc still lists it
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            pass
        assert holder.gone(named)
    proc.wait(30)
    assert holder.gone(named)
    own = holder.this_process()
    assert own is not None
    reused = own.rsplit("/", 1)[0] + "/0"  # this pid, another start time
    assert holder.gone(reused)
