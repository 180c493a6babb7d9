"""The recorder's groups: a run of files starts with groups of one batch, one per
request a worker keeps in flight (so the first requests can leave before hundreds
of files are in), then doubling while groups keep filling, up to the recorder's
group size; a flush starts over."""

from __future__ import annotations

from pathlib import Path

import pytest

from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile
from scheduler.batcher import Batcher, BatchLimits
from scheduler.recorder import Recorder


def _new(i: int) -> NewFile:
    return NewFile(
        path=f"f{i}.jpg",
        source_root="/inbox",
        work_path=f"/work/f{i}.jpg",
        origin=Origin.EVENT,
        size=10,
        mtime=1.0,
        sha256=f"{i:064x}",
        seen_at=1.0,
    )


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [
        # 10, then 20, 40, and 50 at most: recorded when the 10th, 30th, 70th, 120th,
        # 170th file came in.
        (1, [(10, 10), (30, 20), (70, 40), (120, 50), (170, 50)]),
        # Two groups of one batch (one per request slot), then doubling.
        (2, [(10, 10), (20, 10), (40, 20), (80, 40), (130, 50), (180, 50)]),
        (3, [(10, 10), (20, 10), (30, 10), (50, 20), (90, 40), (140, 50)]),
    ],
)
def test_groups_start_at_one_batch_per_slot_and_double(
    tmp_path: Path, ledger: Ledger, concurrency: int, expected: list[tuple[int, int]]
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "var", batch_max_files=10, worker_concurrency=concurrency
    ).ingest
    batcher = Batcher(
        BatchLimits.from_settings(settings), create=lambda ids: 0, enqueue=lambda _id: None
    )
    recorder = Recorder(settings, ledger, batcher, group_size=50)
    recorded_at = []
    for i in range(1, 181):
        if (counts := recorder.add(_new(i))) is not None:
            recorded_at.append((i, counts.recorded))
    assert recorded_at == expected
    left = 180 - expected[-1][0]
    assert recorder.flush().recorded == left
    assert recorder.add(_new(181)) is None
    assert [recorder.add(_new(i)) is not None for i in range(182, 191)][-1]  # 10 again
    assert recorder.totals.recorded == 190
