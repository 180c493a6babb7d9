"""Images the server dropped are noticed and sent again: the retention drill.

Real processes (redis-server, the stand-in, the watcher, a worker, beat), on
PostgreSQL (see the test). The stand-in keeps images for a few seconds
(STANDIN_RETENTION), as Reka's developer tier keeps them for 30 days. Files
are dropped and indexed; then their images expire on the stand-in, and:

- beat's periodic check (INGEST_SERVER_CHECK_INTERVAL) sees them missing, and
  says so in `status --json` and on the metrics page, changing nothing;
- `reka-ingest check --json` (read only) reports them missing and changes nothing;
- `reka-ingest check --fix --json` marks each `expired` (a terminal state,
  counted by `status`);
- `reka-ingest retry --reason expired` sends them again from done/, where
  INGEST_AFTER_UPLOAD=move kept their bytes: each ends `indexed` with a new
  image id, the stand-in holds exactly one copy of each, and a last check finds
  nothing missing and no orphan.

The retention is turned off (at runtime) before the retry, so the images sent
again stay.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reka_ingest.core.states import FileState
from tests.faults.support import stored_images
from tests.support.images import image_bytes
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N = 12
RETENTION = 6.0  # seconds the stand-in keeps an image
CHECK_INTERVAL = 2.0  # beat's periodic server check
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        env={
            "INGEST_DATABASE_URL": database_url,
            "INGEST_AFTER_UPLOAD": "move",  # bytes kept in done/, so they can go again
            "INGEST_SERVER_CHECK_INTERVAL": str(CHECK_INTERVAL),
            "INGEST_SIDECAR_WAIT": "0",
        },
        standin_env={"STANDIN_RETENTION": str(RETENTION)},
    )
    try:
        yield svc
    finally:
        svc.stop()


def cli(svc: Service, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", *args],
        env=svc.env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = done.stdout.decode("utf-8", errors="replace")
    err = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode in ok, f"{args}: exit {done.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out


def cli_json(svc: Service, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
    return json.loads(cli(svc, *args, "--json", ok=ok))


def states(svc: Service) -> dict[str, int]:
    return dict(Counter(str(r.state) for r in svc.files()))


# On PostgreSQL alone: the drill is about real processes and commands from a shell
# (beat's periodic check, `check`, `check --fix`, `retry`); what each does to the
# ledger is tested on both ledgers in tests/serverside/test_check.py, and SQLite is
# the ledger of most other end-to-end tests.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_expired_images_are_marked_by_check_fix_and_sent_again_by_retry(
    service: Service,
) -> None:
    svc = service.start()
    names = [f"keep/{i % 3}/img-{i:02d}.jpg" for i in range(N)]
    for i, rel in enumerate(names):
        target = svc.inbox / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(image_bytes(52_000 + i, size=(32, 24)))
        part.rename(target)
    svc.wait_terminal(N, timeout=60)
    assert states(svc) == {FileState.INDEXED: N}, svc.diagnose()
    first = {r.path: r for r in svc.files()}
    assert all(r.final_path and Path(r.final_path).is_file() for r in first.values())

    # The retention runs out: the stand-in forgets every one of them.
    wait_for(
        lambda: not svc.standin("/v1/images?limit=100")["results"],
        RETENTION + 30,
        "the images to expire on the stand-in",
        on_timeout=svc.diagnose,
    )
    assert svc.standin("/_standin/stats")["images_expired"] == N
    svc.standin_post("/_standin/faults", {"retention": 0})  # what is sent again stays

    # Beat's periodic check notices, read only: status and the metrics say so.
    wait_for(
        lambda: (cli_json(svc, "status")["server_check"] or {}).get("missing") == N,
        CHECK_INTERVAL * 5 + 30,
        "the periodic check to find the images missing",
        interval=2.0,  # each try is a command's start
        on_timeout=svc.diagnose,
    )
    status = cli_json(svc, "status")
    assert status["server_check"]["orphans"] == 0, status
    assert status["server_check"]["age_seconds"] is not None, status
    assert "server check: 0 orphans, 12 missing" in cli(svc, "status")
    page = cli(svc, "metrics", "--once")
    assert f"reka_ingest_server_missing {float(N)}" in page, page
    assert "reka_ingest_server_orphans 0.0" in page, page
    assert states(svc) == {FileState.INDEXED: N}

    # `check` alone reports and changes nothing.
    report = cli_json(svc, "check", ok=(0, 1))
    assert (report["missing"], report["orphans"]) == (N, 0), report
    assert states(svc) == {FileState.INDEXED: N}

    # `check --fix`: each one expired, in the ledger and in status.
    fixed = cli_json(svc, "check", "--fix", ok=(0, 1))
    assert fixed["missing"] == N, fixed
    assert fixed["fixed"]["expired"] == N, fixed
    assert states(svc) == {"expired": N}, svc.diagnose()
    assert cli_json(svc, "status")["files"]["expired"] == N

    # `retry --reason expired`: sent again from done/, indexed again, new image ids.
    cli(svc, "retry", "--reason", "expired")
    svc.wait_terminal(N, timeout=60)
    assert states(svc) == {FileState.INDEXED: N}, svc.diagnose()
    again = {r.path: r for r in svc.files()}
    assert set(again) == set(names)
    for path, row in again.items():
        assert row.image_id and row.image_id != first[path].image_id, (path, row.image_id)
        assert row.sha256 == first[path].sha256, path

    # The stand-in holds exactly one copy of each file, under the recorded ids.
    held = stored_images(svc)
    assert held == {r.image_id: r.sha256 for r in again.values()}, held

    last = cli_json(svc, "check", ok=(0, 1))
    assert (last["missing"], last["orphans"], last["drift"]) == (0, 0, 0), last
    assert last["duplicates_unsettled"] == 0, last
