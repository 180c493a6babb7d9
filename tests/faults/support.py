"""What every fault scenario shares: dropping files, and the audit that decides,
from the ledger and from what the stand-in server actually received, whether a
file was lost or uploaded twice without being flagged.

The audit counts from real data only:
- dropped: the paths the test wrote into the inbox;
- terminal: of those, rows in a final state (indexed, stored, duplicate, failed);
- lost: dropped paths with no row, or a row not final;
- uploaded twice: files whose sha256 the stand-in stored more than once (every
  image listed through `GET /v1/images`, each one's sha256 from
  `/_standin/images/{id}`);
- flagged: rows marked `possible_duplicate`.
The promise: lost == 0 and uploaded-twice files are a subset of flagged files.

Then `check_fix` runs `check --fix` (`worker.serverside.check_server(rt,
fix=True)`, with a runtime built from the drill service's own settings) and
counts again from the stand-in: the copies of each sha256 it holds beyond one
(the table's column "extra copies left after check --fix"), the rows still
flagged `possible_duplicate`, and the rows whose own image the fix removed.
The promise there: no extra copy, no flag left, every recorded image kept.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from reka_ingest.core.queues import TASK_UPLOAD_BATCH
from reka_ingest.core.states import TERMINAL, FileState
from reka_ingest.ledger import open_ledger
from tests.support.images import image_bytes
from tests.support.service import API_KEY, Service
from worker.runtime import Runtime
from worker.serverside import check_server

# Small, distinct images: the scenarios are about processes, not bytes.
IMAGE_SIZE = (24, 16)
PAGE = 100

# Every knob the scenarios turn, back to quiet (the audit reads through /v1).
QUIET = {
    "fail_share": 0.0,
    "drop_share": 0.0,
    "latency": 0.0,
    "latency_jitter": 0.0,
    "burst_429_share": 0.0,
}

# Settings every scenario shares: no daily budget (the stand-in has no quota),
# small batches so there are many requests, a short lease and requeue so the
# sweep takes back a batch in seconds, not the production ten minutes.
FAULT_ENV = {
    "INGEST_UPLOADS_PER_DAY": "0",
    "INGEST_BATCH_MAX_FILES": "10",
    "INGEST_BATCH_MAX_WAIT": "0.5",
    "INGEST_BATCH_LEASE": "5",
    "INGEST_REQUEUE_AFTER": "5",
    "INGEST_SWEEP_INTERVAL": "1.0",
    "INGEST_SCAN_INTERVAL": "2.0",
    "INGEST_MIN_FILE_AGE": "0.3",
}
STANDIN_ENV = {"STANDIN_INDEX_DELAY": "0.3"}


def drop_files(inbox: Path, names: list[str], *, seed: int = 0) -> list[str]:
    """Write each image whole (temp name, then rename), as a camera or rsync does."""
    for i, rel in enumerate(names):
        target = inbox / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(image_bytes(seed + i, size=IMAGE_SIZE))
        tmp.rename(target)
    return names


def file_names(n: int, prefix: str) -> list[str]:
    return [f"{prefix}/{i % 4}/img-{i:04d}.jpg" for i in range(n)]


def freeze_tree(pid: int) -> list[int]:
    """SIGSTOP a process we started and every process under it (sockets stay open),
    and wait until each is stopped: the signal lands asynchronously, and a process
    still running on the other core for a moment could commit after the caller
    looked at the ledger (a snapshot of "frozen" state that is not)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.0005)
    return [p.pid for p in procs]


def thaw(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            continue


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process we started and every process under it, by pid.

    The children are listed first, then the parent dies first: it never sees a
    child die (a Celery main process would requeue the task), and no child lives
    on to finish its request.
    """
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    killed = []
    for p in [pid, *(c.pid for c in children)]:
        try:
            os.kill(p, signal.SIGKILL)
            killed.append(p)
        except ProcessLookupError:
            continue
    for c in children:
        try:
            c.wait(timeout=5)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
            continue
    return killed


def log_events(svc: Service, prefix: str, event: str) -> list[dict[str, Any]]:
    """The JSON log records named `event` in the logs of children named `prefix*`."""
    out = []
    for path in sorted((svc.data_dir / "logs").glob(f"{prefix}*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
    return out


def celery_tasks(svc: Service, name: str, task: str = TASK_UPLOAD_BATCH) -> tuple[list[str], int]:
    """The `task` tasks the worker node `name` received and has not finished (prefetch
    1: a task received is one being run), and how many it finished, by Celery's own
    log lines in `name.log`."""
    path = svc.data_dir / "logs" / f"{name}.log"
    if not path.exists():
        return [], 0
    line_re = re.compile(
        rf"^(?:Task |Discarding revoked task: ){re.escape(task)}\[(?P<id>[0-9a-f-]+)\]"
        r"(?P<what> received|)"
    )
    open_ids: dict[str, None] = {}
    finished = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or task not in line:
            continue
        match = line_re.match(str(json.loads(line).get("event", "")))
        if match is None:
            continue
        if match["what"]:
            open_ids[match["id"]] = None
        elif open_ids.pop(match["id"], "gone") is None:
            finished += 1  # succeeded, raised, retried or discarded
    return list(open_ids), finished


def tasks_in_hand(svc: Service, name: str, task: str = TASK_UPLOAD_BATCH) -> list[str]:
    """The `task` tasks the worker node `name` is running now (see `celery_tasks`)."""
    return celery_tasks(svc, name, task)[0]


def resent_by_sweep(svc: Service) -> int:
    """Batches the beat sweep sent again (lost messages, dead workers, waits over)."""
    return sum(int(r["sent"]) for r in log_events(svc, "worker", "sweep_batches"))


@dataclass
class Tally:
    scenario: str
    dropped: int
    terminal: int
    lost: int
    uploaded_twice: int
    flagged: int
    wall_s: float
    states: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    # After `check --fix` (see `check_fix`); None: not run.
    extra_after_fix: int | None = None  # copies per sha256 on the stand-in beyond one
    flagged_after_fix: int | None = None  # rows still possible_duplicate

    def row(self) -> str:
        return (
            f"{self.scenario:<56} dropped={self.dropped:<4} terminal={self.terminal:<4} "
            f"lost={self.lost:<3} uploaded_twice={self.uploaded_twice:<3} "
            f"flagged={self.flagged:<3} wall={self.wall_s:.1f}s "
            f"extra_after_fix={self.extra_after_fix} flagged_after_fix={self.flagged_after_fix}"
        )


@dataclass
class Audit:
    tally: Tally
    lost: list[str]
    unflagged_twice: list[str]
    # Rows with copies on the server their own image_id does not explain (a file
    # that failed after a request was stored, or went twice), and no flag.
    unflagged_unknown_copies: list[str]
    strays: list[str]  # images on the server whose bytes no row has
    wrong_image: list[str]  # rows whose image_id holds other bytes than the file's
    unexplained_failures: list[str]  # failed rows without a reason and message
    extra_rows: list[str]  # rows for paths nobody dropped, or a path twice
    # After `check --fix` (see `check_fix`):
    extra_copies: dict[str, int] = field(default_factory=dict)  # sha256 -> copies, if > 1
    flags_left: list[str] = field(default_factory=list)  # rows still possible_duplicate
    originals_gone: list[str] = field(default_factory=list)  # rows whose image was removed
    unsettled: int | None = None  # the fix's own count of duplicates it could not settle


def stored_images(svc: Service) -> dict[str, str]:
    """image_id -> sha256 of every image the stand-in holds (faults turned off first)."""
    svc.standin_post("/_standin/faults", QUIET)
    headers = {"X-Api-Key": API_KEY}
    ids: list[str] = []
    with httpx.Client(base_url=svc.base_url, headers=headers, timeout=10) as client:
        offset = 0
        while True:
            r = client.get("/v1/images", params={"limit": PAGE, "offset": offset})
            r.raise_for_status()
            body = r.json()
            page = body["results"] if isinstance(body, dict) else body
            ids.extend(item["image_id"] for item in page)
            if len(page) < PAGE:
                break
            offset += PAGE
        out: dict[str, str] = {}
        for image_id in ids:
            r = client.get(f"/_standin/images/{image_id}")
            r.raise_for_status()
            out[image_id] = r.json()["sha256"]
    return out


def audit(svc: Service, scenario: str, dropped: list[str], started: float) -> Audit:
    wall = time.monotonic() - started
    rows = svc.files()
    paths = Counter(r.path for r in rows)
    by_path = {r.path: r for r in rows}
    expected = set(dropped)
    lost = [p for p in dropped if p not in by_path or by_path[p].state not in TERMINAL]
    terminal = sum(1 for p in dropped if p in by_path and by_path[p].state in TERMINAL)
    extra = sorted({p for p in paths if p not in expected} | {p for p, n in paths.items() if n > 1})

    images = stored_images(svc)
    copies = Counter(images.values())
    twice = sorted(r.path for r in rows if r.sha256 and copies[r.sha256] > 1)
    flagged = sorted(r.path for r in rows if r.possible_duplicate)
    known = {r.sha256 for r in rows}
    unknown_copies = sorted(
        r.path
        for r in rows
        if r.sha256 and copies[r.sha256] - (1 if r.image_id in images else 0) > 0
    )
    strays = sorted(i for i, sha in images.items() if sha not in known)
    wrong = sorted(
        r.path for r in rows if r.image_id is not None and images.get(r.image_id) != r.sha256
    )
    unexplained = sorted(
        r.path
        for r in rows
        if r.state == FileState.FAILED and not (r.reason and (r.message or "").strip())
    )
    states = dict(Counter(r.state for r in rows))
    tally = Tally(
        scenario=f"{scenario} ({svc.ledger.engine.dialect.name})",
        dropped=len(dropped),
        terminal=terminal,
        lost=len(lost),
        uploaded_twice=len(twice),
        flagged=len(flagged),
        wall_s=round(wall, 1),
        states=states,
        detail={
            "images_stored": len(images),
            "failed_reasons": dict(Counter(r.reason for r in rows if r.state == FileState.FAILED)),
            "copies_unknown_to_ledger": len(unknown_copies),
            "standin": svc.standin("/_standin/stats"),
            "resent_by_sweep": resent_by_sweep(svc),
        },
    )
    return Audit(
        tally=tally,
        lost=lost,
        unflagged_twice=sorted(set(twice) - set(flagged)),
        unflagged_unknown_copies=sorted(set(unknown_copies) - set(flagged)),
        strays=strays,
        wrong_image=wrong,
        unexplained_failures=unexplained,
        extra_rows=extra,
    )


def check_fix(svc: Service, a: Audit) -> None:
    """`check --fix` on the drill's ledger and stand-in, then what the stand-in holds.

    Fills `a.tally.extra_after_fix` (copies per sha256 beyond one, over every image
    the stand-in holds) and `flagged_after_fix`, and on `a` the details that
    `assert_settled` judges. Faults are off by now (`stored_images`, in `audit`)."""
    settings = svc.settings()
    rt = Runtime(settings, open_ledger(settings.ingest.ledger_url, migrate=False))
    try:
        fixed = check_server(rt, fix=True)
    finally:
        rt.close()
    images = stored_images(svc)
    copies = Counter(images.values())
    rows = svc.files()
    a.extra_copies = {sha: n for sha, n in copies.items() if n > 1}
    a.flags_left = sorted(r.path for r in rows if r.possible_duplicate)
    a.originals_gone = sorted(
        r.path
        for r in rows
        if r.state in (FileState.INDEXED, FileState.STORED)
        and (r.image_id is None or images.get(r.image_id) != r.sha256)
    )
    a.unsettled = fixed.duplicates_unsettled
    a.tally.extra_after_fix = sum(n - 1 for n in a.extra_copies.values())
    a.tally.flagged_after_fix = len(a.flags_left)
    a.tally.detail["check_fix"] = {
        "orphans": fixed.orphans,
        "missing": fixed.missing,
        "drift": fixed.drift,
        "duplicates_settled": fixed.duplicates_settled,
        "duplicates_unsettled": fixed.duplicates_unsettled,
        "fixed": dict(fixed.fixed),
        "requests": fixed.requests,
        "seconds": round(fixed.seconds, 2),
        "images_left": len(images),
        "notes": list(fixed.notes),
    }


def assert_settled(a: Audit, svc: Service) -> None:
    """After `check_fix`: one copy of each file on the server, every flag settled, and
    no image a row records removed."""
    t = a.tally
    why = f"{t.row()}\nstates={t.states}\n{t.detail}\n{svc.diagnose()}"
    assert t.extra_after_fix == 0, f"extra copies left after check --fix: {a.extra_copies}\n{why}"
    assert a.flags_left == [], f"possible_duplicate left after check --fix: {a.flags_left}\n{why}"
    assert a.unsettled == 0, f"check --fix left duplicates unsettled\n{why}"
    assert a.originals_gone == [], f"check --fix removed recorded images: {a.originals_gone}"


def report(tally: Tally, results: Path) -> None:
    """One summary row, printed (pytest -s) and appended to pytest's tmp dir."""
    print(f"\n[faults] {tally.row()}\n[faults] states={tally.states} {tally.detail}")
    with results.open("a") as fh:
        fh.write(json.dumps(asdict(tally)) + "\n")


def assert_nothing_lost(a: Audit, svc: Service) -> None:
    t = a.tally
    why = f"{t.row()}\nstates={t.states}\n{t.detail}\n{svc.diagnose()}"
    assert a.extra_rows == [], f"rows for unknown paths or a path twice: {a.extra_rows}\n{why}"
    assert a.lost == [], f"lost: {a.lost}\n{why}"
    assert t.terminal == t.dropped, why
    assert a.unflagged_twice == [], f"uploaded twice, not flagged: {a.unflagged_twice}\n{why}"
    assert a.unflagged_unknown_copies == [], (
        f"on the server unbeknown to the ledger, not flagged: {a.unflagged_unknown_copies}\n{why}"
    )
    assert a.wrong_image == [], f"image_id with other bytes: {a.wrong_image}\n{why}"
    assert a.strays == [], f"images on the server no row knows: {a.strays}\n{why}"
    assert a.unexplained_failures == [], f"failed without a reason: {a.unexplained_failures}"
