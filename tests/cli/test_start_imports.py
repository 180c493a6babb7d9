"""A command imports what it uses, not what its neighbours use: `files --csv`
loads no HTTP client, no Celery, no rich, no alembic on a ledger already at
head, and not structlog while it logs nothing (reka_ingest.core.logs imports it
at the first line); `status` loads rich only for --watch; `config` loads no
command at all. Each runs as the console script does, in a fresh interpreter,
and reports the modules it had loaded when it exited."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reka_ingest.ledger import open_ledger
from tests.support.export_rows import fill_files

# Runs `reka-ingest ARGS` (argv[2:]) and writes the names of the modules loaded at
# its exit, as JSON, to argv[1].
PROBE = """
import atexit, json, sys
out = sys.argv[1]
sys.argv = ["reka-ingest", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from reka_ingest.cli.main import main
main()
"""

# Libraries none of these commands needs: the API client, the task queue and its
# transport, the web app, image decoding, the metrics server, migrations.
NOT_FOR_READING = frozenset(
    {
        "httpx",
        "celery",
        "kombu",
        "PIL",
        "uvicorn",
        "starlette",
        "jinja2",
        "prometheus_client",
        "alembic",
        "watchdog",
    }
)


def loaded(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[set[str], str]:
    """The modules `reka-ingest ARGS` had loaded at exit, and its stdout."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text())), done.stdout


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    data = tmp_path / "var"
    ledger = open_ledger(f"sqlite:///{data / 'ledger.db'}")  # at head: no alembic in the command
    fill_files(ledger, 10)
    ledger.dispose()
    return {
        **os.environ,
        "INGEST_DATA_DIR": str(data),
        "INGEST_INBOX": str(tmp_path / "inbox"),
        "INGEST_REDIS_URL": redis_url,
    }


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_files_csv_loads_the_ledger_and_no_more(
    env: dict[str, str], tmp_path: Path, log_format: str
) -> None:
    modules, stdout = loaded(
        ["files", "--csv", "--limit", "1"], env | {"INGEST_LOG_FORMAT": log_format}, tmp_path
    )
    assert len(list(csv.reader(io.StringIO(stdout)))) == 2  # the header and one row
    assert "sqlalchemy" in modules
    assert not modules & (NOT_FOR_READING | {"redis", "rich", "structlog"})


def test_status_loads_rich_only_to_watch(env: dict[str, str], tmp_path: Path) -> None:
    modules, stdout = loaded(["status", "--json"], env, tmp_path)
    assert json.loads(stdout)["total"] == 10
    assert {"sqlalchemy", "redis"} <= modules
    assert not modules & (NOT_FOR_READING | {"rich"})


def test_config_loads_no_command(env: dict[str, str], tmp_path: Path) -> None:
    modules, stdout = loaded(["config", "--json"], env, tmp_path)
    assert "INGEST" in json.loads(stdout)
    assert not modules & (NOT_FOR_READING | {"sqlalchemy", "redis", "rich", "structlog"})
    assert not {m for m in modules if m.startswith("reka_ingest.cli.")} - {
        "reka_ingest.cli.main",
        "reka_ingest.cli.deployment",
        "reka_ingest.cli.pid_file",
    }


LOG_PROBE = """
import io, json, logging, sys
from reka_ingest.core.logs import configure_logging, get_logger
from reka_ingest.core.settings import LogFormat
stream = io.StringIO()
configure_logging("INFO", LogFormat.JSON, stream=stream)
log = get_logger("tests.start")
before = "structlog" in sys.modules
log.info("first_line", api_key="secret-key", n=1)
logging.getLogger("celery.worker").warning("from %s", "the standard library")
print(json.dumps({"before": before, "lines": stream.getvalue().splitlines()}))
"""


def test_structlog_is_imported_at_the_first_line_and_configured() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOG_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(done.stdout)
    assert report["before"] is False
    first, second = (json.loads(line) for line in report["lines"])
    assert first["event"] == "first_line"
    assert first["api_key"] == "***"
    assert first["logger"] == "tests.start"
    assert {"level", "timestamp"} <= set(first)
    assert second["event"] == "from the standard library"
    assert second["logger"] == "celery.worker"
