"""The poison drill (issue 10), end to end through the real service (bundled
Redis, stand-in server, watcher, Celery worker and beat as processes): good and
poison files dropped together, as bytes.

Every file ends terminal: the good ones `indexed` (names not UTF-8, a 255-byte
name, a newline, a sidecar written 3 s after its image and still paired), the
poison ones `failed` with their reasons, each with a NAME.error.json whose
name fits NAME_MAX (a sidecar nested 100,000 deep, a deep `_defaults.json`
failing each image under it, sidecars that are `null`, `[]`, `1e400`, a
sidecar written after its image was uploaded: `late_sidecar`). Nothing is left
in var/work/. Then the service is stopped and started again on the same data,
and a good file dropped after the restart is indexed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reka_ingest.core.states import TERMINAL
from reka_ingest.ledger.schema import File
from tests.support.images import image_bytes
from tests.support.poison import (
    DEEP_ARRAY,
    DEEP_OBJECT_CLOSED,
    files_under,
    fits,
    read_reason_file,
    shown,
    wait_until,
    write_at,
)
from tests.support.service import Service

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ENV = {
    "INGEST_SCAN_INTERVAL": "1.0",
    "INGEST_ORPHAN_SIDECAR_AFTER": "3",
    "INGEST_SIDECAR_WAIT": "5",  # the default, said out loud: the 3 s sidecar must make it
    "INGEST_UPLOADS_PER_DAY": "0",
}
LONG_GOOD = b"L" * 251 + b".jpg"  # 255 bytes
LONG_BAD = b"E" * 251 + b".jpg"  # 255 bytes, empty: its .error.json must be shortened

GOOD = {  # relative path (bytes) -> image seed
    b"good.jpg": 1,
    b"sub/good2.jpg": 2,
    b"caf\xe9.jpg": 3,
    b"d\xff\xfe/inner.jpg": 4,
    LONG_GOOD: 5,
    b"new\nline.jpg": 6,
    b"paired-late.jpg": 7,  # its sidecar comes 3 s after it
    b"late.jpg": 8,  # its sidecar comes after it was uploaded
}
PAIRED_META = {"caption": "written three seconds after its image", "camera_id": "cam-3s"}
# relative path -> (bytes, sidecar (name, bytes) or None, reason)
POISON: dict[bytes, tuple[bytes, tuple[bytes, bytes] | None, str]] = {
    b"deep.jpg": (image_bytes(21), (b"deep.jpg.json", DEEP_ARRAY), "bad_sidecar"),
    b"null.jpg": (image_bytes(22), (b"null.jpg.json", b"null"), "bad_sidecar"),
    b"array.jpg": (image_bytes(23), (b"array.json", b"[]"), "bad_sidecar"),
    b"huge.jpg": (image_bytes(24), (b"huge.jpg.json", b"1e400"), "bad_sidecar"),
    b"deepdefaults/one.jpg": (image_bytes(25), None, "bad_sidecar"),
    b"deepdefaults/sub/two.jpg": (image_bytes(26), None, "bad_sidecar"),
    LONG_BAD: (b"", None, "empty_file"),
    b"bad\xffname.jpg": (
        b"this is not an image, and its name is not UTF-8\n",
        None,
        "not_an_image",
    ),
    b"\xfe\xfd/empty.jpg": (b"", None, "empty_file"),
    b"bad\nline.jpg": (b"", None, "empty_file"),
}
LATE_SIDECAR = b"late.jpg.json"


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    env = {**ENV, "INGEST_DATABASE_URL": database_url}
    svc = Service(tmp_path, redis_url, env=env, standin_env={"STANDIN_INDEX_DELAY": "0.3"})
    try:
        yield svc
    finally:
        svc.stop()


def good_bytes(seed: int) -> bytes:
    return image_bytes(9000 + seed)


def drop(inbox: Path) -> None:
    """The whole drop at once, sidecars before their images."""
    write_at(inbox, b"deepdefaults/_defaults.json", DEEP_OBJECT_CLOSED)
    for _data, side, _reason in POISON.values():
        if side is not None:
            write_at(inbox, side[0], side[1])
    for rel, (data, _side, _reason) in POISON.items():
        write_at(inbox, rel, data)
    for rel, seed in GOOD.items():
        write_at(inbox, rel, good_bytes(seed))


def rows(svc: Service) -> dict[str, File]:
    return {r.path: r for r in svc.files()}


def cli_files(svc: Service, fmt: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "files", fmt],
        env=svc.env,
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode("utf-8")  # the paths are shown as valid UTF-8 text


def check_failed(svc: Service, row: File, reason: str) -> None:
    where = (row.path, row.state, row.reason, row.message)
    assert (row.state, row.reason) == ("failed", reason), where
    assert row.message, where
    error_file = row.final_path
    assert error_file is not None and error_file.endswith(".error.json"), where
    assert os.path.isfile(error_file), (where, error_file)
    assert fits(error_file), (where, len(os.path.basename(os.fsencode(error_file))))
    failed_root = os.path.join(os.path.realpath(svc.settings().ingest.failed_path), "")
    assert os.path.realpath(error_file).startswith(failed_root), (where, error_file)
    record = read_reason_file(error_file)
    assert (record["path"], record["reason"]) == (row.path, reason), (where, record)
    assert record["message"] == row.message, (where, record)


@pytest.mark.timeout(100)
def test_a_poison_drill_fails_each_poison_alone_and_survives_a_restart(
    service: Service, tmp_path: Path, redis_url: str
) -> None:
    started = time.monotonic()
    svc = service.start()
    wait_until(
        lambda: (
            (svc.data_dir / "logs" / "watcher.log").exists()
            and b"watcher.started" in (svc.data_dir / "logs" / "watcher.log").read_bytes()
        ),
        20,
        "the watcher to start",
        detail=svc.diagnose,
    )
    drop(svc.inbox)
    image_written = time.monotonic()
    # A writer that saves the image first and its sidecar 3 s later: well within
    # INGEST_SIDECAR_WAIT, so the two must go together. (The gap is the scenario.)
    time.sleep(max(0.0, image_written + 3.0 - time.monotonic()))
    write_at(svc.inbox, b"paired-late.jpg.json", json.dumps(PAIRED_META).encode())

    # A sidecar that comes after its image was uploaded: late_sidecar, alone.
    wait_until(
        lambda: bool(getattr(rows(svc).get("late.jpg"), "image_id", None)),
        35,
        "late.jpg to be uploaded",
        interval=0.25,
        detail=svc.diagnose,
    )
    write_at(svc.inbox, LATE_SIDECAR, json.dumps({"caption": "too late"}).encode())

    expected = {shown(rel) for rel in [*GOOD, *POISON, LATE_SIDECAR]}
    wait_until(
        lambda: (
            expected <= set(current := rows(svc))
            and all(current[p].state in TERMINAL for p in expected)
            and all(r.final_path for r in current.values() if r.state == "failed")
        ),
        30,
        f"{len(expected)} files to end terminal",
        interval=0.25,
        detail=lambda: f"missing: {sorted(expected - set(rows(svc)))}\n{svc.diagnose()}",
    )
    by_path = rows(svc)
    assert set(by_path) == expected, sorted(set(by_path) ^ expected)

    # The good ones: indexed, the bytes sent are the bytes dropped, moved to done/.
    for rel, seed in GOOD.items():
        row = by_path[shown(rel)]
        assert row.state == "indexed", (row.path, row.state, row.reason, row.message)
        assert row.sha256 == hashlib.sha256(good_bytes(seed)).hexdigest(), row.path
        received = svc.standin(f"/_standin/images/{row.image_id}")
        assert received["sha256"] == row.sha256, row.path
        assert row.final_path is not None and os.path.isfile(row.final_path), row.path
        assert fits(row.final_path), row.final_path
    assert by_path["caf%E9.jpg"].path == "caf%E9.jpg"
    assert "d%FF%FE/inner.jpg" in by_path
    assert LONG_GOOD.decode() in by_path  # the full 255-byte name in the ledger
    # The sidecar that came 3 s after its image went with it.
    paired = by_path["paired-late.jpg"]
    assert paired.sidecar == PAIRED_META, (paired.sidecar, paired.message)
    sent = svc.standin(f"/_standin/images/{paired.image_id}")["metadata"]
    assert {k: sent.get(k) for k in PAIRED_META} == PAIRED_META, sent

    # The poison ones: failed alone, each with its reason and its reason file.
    for rel, (_data, _side, reason) in POISON.items():
        check_failed(svc, by_path[shown(rel)], reason)
    assert LONG_BAD.decode() in by_path
    late = by_path[LATE_SIDECAR.decode()]
    check_failed(svc, late, "late_sidecar")
    image = by_path["late.jpg"]
    assert image.state == "indexed" and image.sidecar is None, (image.state, image.sidecar)
    assert "late.jpg" in (late.message or "") and str(image.image_id) in (late.message or "")

    # Nothing left in var/work/; in the inbox only the folder defaults (never taken).
    work = files_under(svc.settings().ingest.work_dir)
    assert not work, work
    left = sorted(p[len(os.fsencode(svc.inbox)) + 1 :] for p in files_under(svc.inbox))
    assert left == [b"deepdefaults/_defaults.json"], left

    # `files --json` and `--csv` show the same paths, by the same rule.
    listed = {f["path"] for f in json.loads(cli_files(svc, "--json"))}
    assert listed == expected, sorted(listed ^ expected)
    in_csv = {r["path"] for r in csv.DictReader(io.StringIO(cli_files(svc, "--csv")))}
    assert in_csv == expected, sorted(in_csv ^ expected)

    # Stop everything, start again on the same data: the start survives what is
    # there, and a good file dropped now is indexed.
    svc.stop()
    env = {**ENV, "INGEST_DATABASE_URL": service.env["INGEST_DATABASE_URL"]}
    again = Service(tmp_path, redis_url, env=env, standin_env={"STANDIN_INDEX_DELAY": "0.3"})
    try:
        again.start()
        write_at(again.inbox, b"after-restart.jpg", good_bytes(99))
        wait_until(
            lambda: getattr(rows(again).get("after-restart.jpg"), "state", None) == "indexed",
            max(5.0, 95 - (time.monotonic() - started)),
            "after-restart.jpg to be indexed",
            interval=0.25,
            detail=again.diagnose,
        )
        after = rows(again)
        assert set(after) == expected | {"after-restart.jpg"}, sorted(set(after) ^ expected)
        for path in expected:  # the drill's outcomes stand
            assert (after[path].state, after[path].reason) == (
                by_path[path].state,
                by_path[path].reason,
            ), path
    finally:
        again.stop()
