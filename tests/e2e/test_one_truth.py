"""One truth in every view ("Done when", issue 16): one real `reka-ingest run`, and a
second shell that sets nothing but INGEST_DATA_DIR. The banner (its progress lines),
`status --json`, `status`, `status --watch` (drawn once), `/metrics` and the web page
agree on the file counts and on the API budget, in the same words; the second shell
says which deployment it reads; no JSON log line is mixed into the banner's output.

Each view is one entry of `VIEWS`: a function from the test's `Views` to what it
shows (counts by state, the budget's first clause).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reka_ingest.cli.pid_file import PID_FILE_NAME
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.states import FileState
from tests.support.images import image_bytes
from tests.support.service import ledger_counts, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PER_DAY = 50
GOOD, BAD = 4, 1


@dataclass(frozen=True)
class Shown:
    counts: dict[str, int]  # states with files
    budget: str  # the budget's first clause, e.g. "47 of 50 upload requests left"


@dataclass
class Views:
    tmp: Path
    second_env: dict[str, str]
    run_out: Path
    web_port: int

    def cli(
        self, *args: str, extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reka_ingest.cli", *args],
            env=self.second_env | (extra or {}),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )


def banner(v: Views) -> Shown:
    """The run's own output: its last progress line,
    `[hh:mm:ss] indexed 4  failed 1  |  API budget: 48 of 50 upload requests left`."""
    progress = [
        ln for ln in v.run_out.read_text().splitlines() if re.match(r"\[\d\d:\d\d:\d\d\] ", ln)
    ]
    if not progress:  # none printed yet
        return Shown({}, "")
    counts_text, _, budget = progress[-1][11:].partition("  |  API budget: ")
    pairs = re.findall(r"([a-z]+) (\d+)", counts_text)
    return Shown({k: int(n) for k, n in pairs}, budget)


def status_json(v: Views) -> Shown:
    data = json.loads(v.cli("status", "--json").stdout)
    return Shown({k: n for k, n in data["files"].items() if n}, data["budget"]["summary"])


def status_text(v: Views) -> Shown:
    out = v.cli("status").stdout
    counts = {k: int(n) for k, n in re.findall(r"^  ([a-z]+) +(\d+)$", out, re.M) if int(n)}
    budget = re.search(r"^API budget: ([^;\n]+)", out, re.M)
    assert budget is not None, out
    return Shown(counts, budget.group(1))


def status_watch(v: Views) -> Shown:
    out = v.cli("status", "--watch", "--once", extra={"COLUMNS": "200"}).stdout
    counts = {
        k: int(n)
        for k, n in re.findall(r"^│ ([a-z]+) +(\d+) ", out, re.M)
        if int(n) and k in set(FileState)
    }
    budget = re.search(r"API budget +([^;│]+?)(?:;|\s+│)", out)
    assert budget is not None, out
    return Shown(counts, budget.group(1).strip())


def metrics(v: Views) -> Shown:
    page = v.cli("metrics", "--once").stdout
    counts = {
        k: int(float(n))
        for k, n in re.findall(r'^reka_ingest_files\{state="([a-z]+)"\} ([0-9.e+]+)$', page, re.M)
        if float(n)
    }
    gauges = dict(re.findall(r"^(reka_ingest_budget_[a-z_]+) ([0-9.e+]+)$", page, re.M))
    if float(gauges["reka_ingest_budget_unlimited"]):
        budget = "unlimited (INGEST_UPLOADS_PER_DAY=0)"
    else:
        left, limit = (
            int(float(gauges[f"reka_ingest_budget_{k}"])) for k in ("remaining", "limit")
        )
        budget = f"{left} of {limit} upload requests left"
    return Shown(counts, budget)


def web_page(v: Views) -> Shown:
    """The page `run` serves beside Flower (from loopback, as a browser on this host)."""
    page = httpx.get(f"http://127.0.0.1:{v.web_port}/", timeout=30)
    page.raise_for_status()
    html = page.text
    counts = {
        k: int(n)
        for k, n in re.findall(r'data-count="([a-z]+)">(\d+)<', html)
        if int(n) and k in set(FileState)  # not the row of the total
    }
    budget = re.search(r'<dd id="budget">([^;<]+)', html)
    assert budget is not None, html
    return Shown(counts, budget.group(1).strip())


VIEWS: dict[str, Callable[[Views], Shown]] = {
    "banner": banner,
    "status --json": status_json,
    "status": status_text,
    "status --watch": status_watch,
    "/metrics": metrics,
    "web page": web_page,
}


def test_every_view_agrees_from_a_second_shell(tmp_path: Path) -> None:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_", "STANDIN_"))
    }
    data_dir = tmp_path / "var"
    run_env = base | {
        "INGEST_DATA_DIR": str(data_dir),
        "INGEST_INBOX": str(tmp_path / "inbox"),
        "INGEST_BUNDLED_REDIS_PORT": str(free_port()),
        "INGEST_FLOWER_PORT": str(free_port()),
        "INGEST_STANDIN_PORT": str(free_port()),
        "INGEST_WEB_PORT": str(free_port()),
        "INGEST_UPLOADS_PER_DAY": str(PER_DAY),  # the second shell does not repeat it
        "INGEST_MIN_FILE_AGE": "0.3",
        "INGEST_BATCH_MAX_WAIT": "1",
        "INGEST_POLL_INITIAL_DELAY": "0.5",
        "INGEST_POLL_SWEEP_INTERVAL": "1",
    }
    second_env = base | {"INGEST_DATA_DIR": str(data_dir)}
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        run = subprocess.Popen(
            [sys.executable, "-m", "reka_ingest.cli", "run"], env=run_env, stdout=out, stderr=err
        )
    views = Views(tmp_path, second_env, out_path, int(run_env["INGEST_WEB_PORT"]))
    try:
        wait_for(
            lambda: b"Drop files into" in out_path.read_bytes(),
            60,
            "the banner",
            on_timeout=lambda: out_path.read_text() + err_path.read_text(),
        )
        text = out_path.read_text()
        assert re.search(rf"API budget +{PER_DAY} of {PER_DAY} upload requests left; 0 used", text)
        record = json.loads((data_dir / PID_FILE_NAME).read_text())["deployment"]
        assert record["standin_url"] == f"http://127.0.0.1:{run_env['INGEST_STANDIN_PORT']}"
        assert record["redis_url"].endswith(f":{run_env['INGEST_BUNDLED_REDIS_PORT']}/0")

        # The banner's status command works as printed, from a shell with nothing set.
        printed = re.search(r"^  Status +(.+?)   \(", text, re.M)
        assert printed is not None, text
        shown = subprocess.run(
            ["bash", "-c", printed.group(1)],
            env=base,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"reading the deployment run from {data_dir} (pid {run.pid}")

        inbox = tmp_path / "inbox"
        for n in range(GOOD):
            (inbox / f"img{n}.jpg").write_bytes(image_bytes(300 + n))
        (inbox / "broken.jpg").write_bytes(b"not an image at all")

        def settled() -> bool:  # read from the ledger: each view is asked once, below
            files = ledger_counts(data_dir)
            active = sum(files[s] for s in ("queued", "uploading", "indexing"))
            return sum(files.values()) == GOOD + BAD and active == 0

        wait_for(settled, 120, "every file to settle", interval=0.25)
        final = {"indexed": GOOD, "failed": BAD}
        wait_for(
            lambda: banner(views).counts == final,
            40,
            "the run's progress line to show the final counts",
            interval=1.0,
            on_timeout=out_path.read_text,
        )
        shown_by = {name: view(views) for name, view in VIEWS.items()}
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(60)
    assert code == 0, out_path.read_text() + err_path.read_text()

    expected_budget = shown_by["status --json"].budget
    left = int(expected_budget.split()[0])
    assert expected_budget == f"{left} of {PER_DAY} upload requests left" and left < PER_DAY
    for name, seen in shown_by.items():
        assert seen.counts == final, (name, seen, shown_by)
        assert seen.budget == expected_budget, (name, seen, shown_by)

    # stdout is the banner's alone: no JSON log line in it (they are in the data folder).
    lines = out_path.read_text().splitlines()
    assert not [ln for ln in lines if ln.lstrip().startswith("{")], lines
    assert (data_dir / "logs" / "run.log").stat().st_size > 0
    assert "stopped." in lines[-1]
    assert not (data_dir / PID_FILE_NAME).exists()  # a clean stop leaves no record
    assert any((data_dir / "standin").rglob("*"))  # the stand-in's images are on disk

    # After the stop, a second shell says nothing runs there, and still reads its files.
    after = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "files", "--state", "failed"],
        env=second_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert after.returncode == 0, after.stderr
    assert after.stderr.startswith(f"no running deployment recorded in {data_dir}")
    assert "broken.jpg" in after.stdout and "not_an_image" in after.stdout
    assert shlex.split(after.stdout.splitlines()[0])[-1]  # the message follows the path
