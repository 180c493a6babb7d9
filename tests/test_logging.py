"""Logs: one JSON object per line when not on a terminal, readable on one; the
level is a setting; one canonical line per batch with the Celery task id bound;
and the API key in no log line of a real run (DEBUG level, a 429 on the way)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import structlog

from reka_ingest.core.logs import configure_logging, get_logger
from reka_ingest.core.settings import LogFormat
from tests.metrics.real_run import BATCHES, key_everywhere, small_run
from tests.support.logging_setup import FakeTerminal
from tests.support.service import API_KEY

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
BATCH_FIELDS = {"batch_id", "files", "bytes", "outcome", "request_id", "duration"}


def emit(
    monkeypatch: pytest.MonkeyPatch, level: str, fmt: LogFormat, stream: io.StringIO
) -> list[str]:
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(level, fmt)
    log = get_logger("tests.logging")
    log.debug("debug_line", n=0)
    log.info("info_line", n=1, api_key=API_KEY)
    structlog.contextvars.bind_contextvars(task_id="task-123")
    log.warning("warning_line", n=2)
    structlog.contextvars.clear_contextvars()
    logging.getLogger("celery.worker").error("from the standard library %s", "logger")
    return stream.getvalue().splitlines()


def test_json_lines_have_one_shape(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    lines = emit(monkeypatch, "INFO", LogFormat.JSON, io.StringIO())
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == [
        "info_line",
        "warning_line",
        "from the standard library logger",
    ]
    for r in records:
        assert {"event", "level", "logger", "timestamp"} <= set(r)
        assert ISO_UTC.match(r["timestamp"])
    assert records[0]["api_key"] == "***"  # a secret-named key is masked
    assert records[1]["task_id"] == "task-123"  # bound context reaches the line ...
    assert "task_id" not in records[2]  # ... and is gone once cleared
    assert records[2]["logger"] == "celery.worker"
    assert API_KEY not in "\n".join(lines)


def test_the_level_is_a_setting(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    warning = [
        json.loads(x)["event"] for x in emit(monkeypatch, "WARNING", LogFormat.JSON, io.StringIO())
    ]
    assert warning == ["warning_line", "from the standard library logger"]
    debug = [
        json.loads(x)["event"] for x in emit(monkeypatch, "DEBUG", LogFormat.JSON, io.StringIO())
    ]
    assert debug[0] == "debug_line"


def test_readable_on_a_terminal_json_otherwise(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    on_tty = emit(monkeypatch, "INFO", LogFormat.AUTO, FakeTerminal())
    assert on_tty and not any(line.startswith("{") for line in on_tty)
    assert any("info_line" in line for line in on_tty)
    piped = emit(monkeypatch, "INFO", LogFormat.AUTO, io.StringIO())
    assert all(json.loads(line)["event"] for line in piped)


def json_records(path: Path) -> list[dict[str, Any]]:
    """A log file's records. Celery's start-up banner and Python warnings are
    printed, not logged, before the process's first INFO record; from that
    record on, anything that is not one JSON object is a bug."""
    records: list[dict[str, Any]] = []
    started = False
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.startswith("{"):
            records.append(json.loads(line))
            started = started or records[-1]["level"] != "debug"
        elif started:
            raise AssertionError(f"{path.name}:{n} is not JSON: {line[:200]!r}")
    return records


def test_a_real_run_logs_json_batch_lines_with_task_ids_and_never_the_key(
    tmp_path: Path, redis_url: str
) -> None:
    with small_run(tmp_path, redis_url, log_level="DEBUG") as run:
        logs = run.service.data_dir / "logs"
        records = {p.stem: json_records(p) for p in sorted(logs.glob("*.log"))}
        worker_cmdline = Path(f"/proc/{run.service.child('worker').pid}/cmdline").read_bytes()
        hits = key_everywhere(run)
    assert hits == []
    assert API_KEY.encode() not in worker_cmdline
    worker = records["worker"]
    assert len(worker) > 10
    for r in worker:
        assert {"event", "level", "logger", "timestamp"} <= set(r)
    assert any(r["level"] == "debug" for r in worker)  # INGEST_LOG_LEVEL=DEBUG took effect

    batch_lines = [r for r in worker if r["event"] == "batch"]
    for r in batch_lines:
        assert set(r) >= BATCH_FIELDS
        assert UUID.match(r["task_id"]), r
        assert r["task"] == "reka_ingest.upload_batch"
    finals = [r for r in batch_lines if r["outcome"] in ("done", "failed")]
    assert sorted(r["batch_id"] for r in finals) == sorted(run.batch_ids)  # one each
    uploaded = [r for r in finals if r["outcome"] == "done"]
    assert len(uploaded) == BATCHES
    for r in uploaded:
        assert r["request_id"] and r["files"] == 3 and r["bytes"] > 0 and r["duration"] >= 0
    # The first batch met a 429: a deferred line with the API's request id.
    deferred = [r for r in batch_lines if r["outcome"] == "deferred"]
    assert deferred and deferred[0]["batch_id"] == run.batch_ids[0]
    assert deferred[0]["request_id"]
    # Task ids differ between runs of the same batch (each delivery is a task).
    first_runs = [r["task_id"] for r in batch_lines if r["batch_id"] == run.batch_ids[0]]
    assert len(set(first_runs)) == len(first_runs) >= 2
