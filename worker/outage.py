"""Riding out a passing ledger outage: a step tried again, with backoff, while the
ledger says it cannot work now (`Ledger.is_outage`: a PostgreSQL restart, a lost
connection, SQLite locked past its timeout), until a deadline.

For writes whose loss costs more than the wait: an upload's answer (the server
holds the images; see worker.parked) and a poll round's results (its rows are
leased to this process until they are written).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

from reka_ingest.core.logs import get_logger
from reka_ingest.ledger import Ledger

log = get_logger(__name__)

T = TypeVar("T")

FIRST_WAIT: Final = 0.05
# A ledger back from an outage is used within a second.
MAX_WAIT: Final = 1.0


def through_outage(ledger: Ledger, deadline: float, step: Callable[[], T]) -> T:
    """`step()`, again after a ledger outage (backoff) until `deadline` (monotonic);
    any other error, or an outage past the deadline, is raised."""
    wait = FIRST_WAIT
    tries = 0
    while True:
        tries += 1
        try:
            return step()
        except Exception as err:
            left = deadline - time.monotonic()
            if not ledger.is_outage(err) or left <= 0:
                raise
            pause = min(wait, left)
            log.warning(
                "ledger_retry",
                attempt=tries,
                wait=round(pause, 3),
                met=ledger.why_waiting(err),
                error=str(err),
            )
            time.sleep(pause)
            wait = min(wait * 2, MAX_WAIT)
