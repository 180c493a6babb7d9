"""`reka-ingest watch`: watch the inbox until SIGINT or SIGTERM, then stop cleanly.

The inbox and the data folder must share a filesystem (a claim is one rename);
that is checked first, so a wrong INGEST_INBOX is reported on the terminal
before the ledger or the broker is touched.
"""

from __future__ import annotations

import signal
from types import FrameType

from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import load_settings
from reka_ingest.ledger import open_ledger_waiting
from scheduler.claim import check_same_filesystem
from scheduler.enqueue import celery_enqueue
from scheduler.watcher import Watcher

log = get_logger(__name__)


def command() -> None:
    """Watch the inbox: take whole files, record them, batch them, enqueue uploads."""
    settings = load_settings()
    check_same_filesystem(settings.ingest)  # a SettingsError reaches stderr (reka_ingest.cli.main)
    ledger = open_ledger_waiting(settings.ingest.ledger_url)
    enqueue, app = celery_enqueue(settings)
    watcher = Watcher(settings.ingest, ledger, enqueue)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("watch.signal", signal=signal.Signals(signum).name)
        watcher.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watcher.run_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.close()
        ledger.dispose()
