"""What an `indexing_status` means for a file: a pure decision, tested without HTTP.

Documented: 1 in progress, 2 indexed. Assumed (shared/reka-api.md): 0 not
indexed (uploaded with index: false), 3 failed. 2 is done, 3 is failed, 0 is
done-without-index when the file asked for no index; anything else is "not
ready yet" until the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from reka_ingest.core.constants import IndexingStatus
from reka_ingest.core.states import FileState, Reason
from worker.backoff import next_poll_delay


@dataclass(frozen=True, slots=True)
class Decision:
    state: FileState
    reason: Reason | None = None
    message: str | None = None
    next_poll_at: float | None = None
    poll_delay: float | None = None


def decide(
    status: int,
    *,
    index_flag: bool,
    uploaded_at: float,
    now: float,
    previous_delay: float | None,
    initial_delay: float,
    max_delay: float,
    deadline: float,
) -> Decision:
    if status == IndexingStatus.INDEXED:
        return Decision(FileState.INDEXED)
    if status == IndexingStatus.FAILED:
        return Decision(
            FileState.FAILED, Reason.INDEXING_FAILED, "Reka reported indexing_status 3 (failed)"
        )
    if status == IndexingStatus.NOT_INDEXED and not index_flag:
        return Decision(FileState.STORED)
    if now - uploaded_at >= deadline:
        return Decision(
            FileState.FAILED,
            Reason.INDEXING_TIMEOUT,
            f"still indexing_status {status} after {deadline:.0f} s",
        )
    delay = next_poll_delay(previous_delay, initial=initial_delay, maximum=max_delay)
    return Decision(FileState.INDEXING, next_poll_at=now + delay, poll_delay=delay)
