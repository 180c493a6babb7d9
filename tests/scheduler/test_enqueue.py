"""The watcher's producer is ready to send before the first file arrives: the
first batch of a burst does not pay for Celery's lazy imports (transport,
result backend), and making it ready connects to nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_producer_is_ready_without_connecting(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from reka_ingest.core.settings import load_settings\n"
        "from scheduler.enqueue import celery_enqueue\n"
        "before = 'kombu.transport.redis' in sys.modules\n"
        "enqueue, app = celery_enqueue(load_settings())\n"
        "print(before, 'kombu.transport.redis' in sys.modules)\n"
        "app.close()\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "INGEST_INBOX": str(tmp_path / "inbox"),
        # Nothing listens there: making the producer ready must not connect.
        "INGEST_REDIS_URL": "redis://127.0.0.1:9/0",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr
