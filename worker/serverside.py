"""The server's side: what Reka holds, compared with what the ledger believes
(`check_server`), and images deleted from Reka on request (`delete_images`).

Plain functions over a worker `Runtime` (its ledger, its client, its settings):
`reka-ingest check` and `reka-ingest delete` call them, and so can a task.

How a check goes, in memory that does not grow with the ledger:

1. **List.** Every page of List Images (`limit=100`, by offset) into one dict,
   image id -> upload time (the status too, for the few not indexed), the only
   thing held per image. Requests are paced (`INGEST_CHECK_REQUESTS_PER_SECOND`).
2. **Ledger, by chunks** (`reka_ingest.ledger.serverside.iter_check_rows`): each
   row that holds an image id marks it owned. A row `indexed`/`stored` whose
   image is not listed is asked for by Get Image: a 404 makes it **missing**
   (with `fix`, `expired`), an answer means the list shifted under us (an image
   deleted while paging) and it is owned after all. A row whose recorded
   `indexing_status` differs from the server's is **drift** (reported only).
   Rows flagged `possible_duplicate` are kept aside (they are few: one per file
   whose upload's answer was lost).
3. **Orphans**: listed images no row owns.
4. **Possible duplicates.** An orphan uploaded in the time window of a flagged
   file (from when the file was found to when its batch or its upload finished,
   give or take `WINDOW_SLACK`) may be a copy of it: its `image_url` is fetched
   and hashed (streamed, never kept) and compared with the file's sha256. A
   flagged file is *settled* when its copies on the server are known: its own
   image and the orphans with its bytes (extra copies: with `fix`, deleted), or
   none at all when its row failed (then any orphan with its bytes is an extra
   copy too: the row stays failed, for `retry` to send again). When
   `image_url` does not serve the original bytes (no fetched orphan matches, and
   an owned image's URL does not hash to its row's sha256 either), a file whose
   window holds no orphan is still settled; one whose window holds some is left
   unsettled, and the report says why.

`fix=True` makes the changes (each a ledger row change with a time, a reason and
a message); `dry_run=True` works out the same changes and makes none.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Final, TypeVar

from reka_ingest.core import constants as c
from reka_ingest.core.errors import ApiError, ApiNotFound, ApiRateLimited, ApiTransportError
from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import ON_SERVER, FileState, Reason
from reka_ingest.ledger.serverside import (
    CHUNK_ROWS,
    CheckRow,
    Deletable,
    Gone,
    Settled,
    clear_possible_duplicates,
    deletable_rows,
    iter_check_rows,
    mark_gone,
    rows_holding,
    upload_spans,
)
from reka_ingest.reka.models import ContentDigest, Image
from worker.runtime import Runtime

log = get_logger(__name__)

T = TypeVar("T")

LIST_PAGE: Final = c.LIST_LIMIT_MAX
EXAMPLES: Final = 5
# Server and ledger clocks differ (and a request takes time): a window is this much wider
# on each side.
WINDOW_SLACK: Final = 120.0
# A passing error (429, 5xx, timeout) is tried again this many times, with a growing pause.
CALL_RETRIES: Final = 4
RETRY_PAUSE: Final = 1.0
_INDEXED: Final = int(c.IndexingStatus.INDEXED)
# Marker of an owned image in the listed dict (a real upload time is never negative).
_OWNED: Final = -1.0
# Row states whose recorded indexing_status is compared with the server's.
_DRIFT_STATES: Final = frozenset({FileState.INDEXED, FileState.STORED, FileState.FAILED})
# A flagged row in these states is still being sent: its copies are not known yet.
_IN_FLIGHT: Final = frozenset({FileState.QUEUED, FileState.UPLOADING})
# The states where the row's own image, if on the server, is one copy of its bytes
# (a superseded row was failed: an image its failed indexing left is still its own).
_OWNS_COPY: Final = frozenset(
    {
        FileState.INDEXING,
        FileState.INDEXED,
        FileState.STORED,
        FileState.FAILED,
        FileState.SUPERSEDED,
    }
)

NOTE_NOT_ORIGINAL: Final = (
    "image_url does not serve the original bytes: matched by time window"
    " (flagged files whose window holds an orphan stay unsettled)"
)
NOTE_DRY_RUN: Final = "dry run: nothing was changed; `fixed` says what --fix would do"


class Pacer:
    """At most `per_second` calls a second, on the real clock (never the runtime's:
    a test's fake clock does not pass while a check waits)."""

    def __init__(
        self,
        per_second: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gap = 1.0 / per_second
        self._sleep = sleep
        self._monotonic = monotonic
        self._next = monotonic()
        self.requests = 0

    def wait(self) -> None:
        now = self._monotonic()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._gap
        self.requests += 1

    def pause(self, seconds: float) -> None:
        """Wait `seconds` (after a passing error) on the pacer's own sleep."""
        self._sleep(seconds)


def _call(pacer: Pacer, fn: Callable[[], T]) -> T:
    """One API call, paced; a passing error is tried again (a 429 after its retry-after)."""
    pause = RETRY_PAUSE
    for attempt in range(CALL_RETRIES + 1):
        pacer.wait()
        try:
            return fn()
        except ApiError as err:
            if not err.retryable or attempt == CALL_RETRIES:
                raise
            wait = pause
            if isinstance(err, ApiRateLimited) and err.rate_limit.retry_after_seconds:
                wait = max(wait, err.rate_limit.retry_after_seconds)
            log.warning("serverside.retry", error=str(err), wait=wait, attempt=attempt + 1)
            pacer.pause(wait)
            pause *= 2
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class CheckReport:
    """What a check found (and, with fix, did); counts, and up to 5 examples of each."""

    images_on_server: int = 0
    rows_checked: int = 0
    orphans: int = 0
    # Images owned by no row yet uploaded while a batch was in flight (its answer not
    # recorded when its rows were read): not orphans; the next check judges them.
    in_flight: int = 0
    missing: int = 0
    drift: int = 0
    duplicates_settled: int = 0
    duplicates_unsettled: int = 0
    examples: dict[str, list[dict[str, object]]] = field(
        default_factory=lambda: {
            k: [] for k in ("orphans", "in_flight", "missing", "drift", "settled", "unsettled")
        }
    )
    requests: int = 0
    seconds: float = 0.0
    fixed: dict[str, int] = field(
        default_factory=lambda: {"extra_copies_deleted": 0, "expired": 0, "flags_cleared": 0}
    )
    notes: list[str] = field(default_factory=list)

    def example(self, kind: str, item: dict[str, object]) -> None:
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(item)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Flagged:
    """A `possible_duplicate` row, kept aside during the scan."""

    row: CheckRow
    own_on_server: bool

    def window(self, now: float) -> tuple[float, float]:
        r = self.row
        ends = [t for t in (r.uploaded_at, r.finished_at, r.batch_finished_at) if t is not None]
        end = max(ends) if ends and r.state not in _IN_FLIGHT else now
        return r.seen_at - WINDOW_SLACK, end + WINDOW_SLACK


@dataclass
class _Scan:
    listed: dict[str, float]  # image id -> upload time, or _OWNED once a row holds it
    odd_status: dict[str, int]  # image id -> indexing_status, for those not 2 (indexed)
    flagged: list[_Flagged] = field(default_factory=list)
    probe: CheckRow | None = None  # a row whose image is listed and whose sha256 is known


def _list_all(rt: Runtime, pacer: Pacer) -> tuple[dict[str, float], dict[str, int]]:
    listed: dict[str, float] = {}
    odd: dict[str, int] = {}
    offset = 0
    while True:
        page = _call(pacer, functools.partial(rt.client.list, limit=LIST_PAGE, offset=offset))
        for image in page:
            listed[image.image_id] = image.upload_timestamp
            if image.indexing_status != _INDEXED:
                odd[image.image_id] = image.indexing_status
            else:
                odd.pop(image.image_id, None)
        if len(page) < LIST_PAGE:
            return listed, odd
        offset += len(page)


def _get(rt: Runtime, pacer: Pacer, image_id: str) -> Image | None:
    """The image, or None when the server answers 404."""
    try:
        return _call(pacer, lambda: rt.client.get(image_id))
    except ApiNotFound:
        return None


def _server_status(scan: _Scan, image_id: str) -> int:
    return scan.odd_status.get(image_id, _INDEXED)


def _drift(report: CheckReport, row: CheckRow, server_status: int) -> None:
    if row.state not in _DRIFT_STATES or row.indexing_status is None:
        return
    if row.indexing_status == server_status:
        return
    report.drift += 1
    report.example(
        "drift",
        {
            "file_id": row.id,
            "path": row.path,
            "image_id": row.image_id,
            "state": row.state,
            "ledger_indexing_status": row.indexing_status,
            "server_indexing_status": server_status,
        },
    )


def _scan_ledger(
    rt: Runtime,
    pacer: Pacer,
    scan: _Scan,
    report: CheckReport,
    *,
    change: bool,
    chunk_rows: int,
) -> int:
    """Walk the ledger by chunks; returns how many rows are missing (marked expired
    chunk by chunk when `change`)."""
    missing_count = 0
    for chunk in iter_check_rows(rt.ledger, chunk_rows=chunk_rows):
        missing: list[Gone] = []
        for row in chunk:
            report.rows_checked += 1
            image_id = row.image_id
            owned = False
            if image_id is not None and image_id in scan.listed:
                scan.listed[image_id] = _OWNED
                owned = True
                _drift(report, row, _server_status(scan, image_id))
            elif image_id is not None and row.state in ON_SERVER:
                found = _get(rt, pacer, image_id)
                if found is None:
                    missing.append(_missing(report, row, rt.clock()))
                else:  # listed after all: the list shifted while we paged
                    scan.listed[image_id] = _OWNED
                    owned = True
                    if found.indexing_status != _INDEXED:
                        scan.odd_status[image_id] = found.indexing_status
                    _drift(report, row, found.indexing_status)
            if owned and scan.probe is None and row.sha256 and row.state in ON_SERVER:
                scan.probe = row
            if row.possible_duplicate:
                scan.flagged.append(_Flagged(row, owned and row.state in _OWNS_COPY))
        if change and missing:
            report.fixed["expired"] += len(
                mark_gone(
                    rt.ledger,
                    missing,
                    state=FileState.EXPIRED,
                    reason=Reason.EXPIRED,
                    now=rt.clock(),
                )
            )
        missing_count += len(missing)
    return missing_count


def _missing(report: CheckReport, row: CheckRow, now: float) -> Gone:
    report.missing += 1
    report.example(
        "missing",
        {"file_id": row.id, "path": row.path, "image_id": row.image_id, "state": row.state},
    )
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return Gone(
        row.id,
        row.state,
        f"Reka no longer holds image {row.image_id} (absent from List Images, 404 on Get"
        f" Image; found by reka-ingest check at {when}): retry --reason expired sends it again",
    )


class _Windows:
    """The flagged files' windows, merged, to ask whether a time falls in any."""

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._spans = merged

    def __contains__(self, t: float) -> bool:
        return any(start <= t <= end for start, end in self._spans)


def _orphans(scan: _Scan) -> Iterator[tuple[str, float]]:
    for image_id, uploaded in scan.listed.items():
        if uploaded != _OWNED:
            yield image_id, uploaded


@dataclass
class _Fetched:
    uploaded: float
    digest: ContentDigest | None = None  # None: gone (404) or larger than any of our files
    error: str | None = None  # could not be fetched


def _fetch(rt: Runtime, pacer: Pacer, image_id: str) -> tuple[ContentDigest | None, str | None]:
    """What an image's URL serves, hashed: (digest, None), (None, None) when it is
    gone, or (None, why) when it could not be read."""
    try:
        image = _get(rt, pacer, image_id)
        if image is None:
            return None, None
        max_bytes = rt.settings.ingest.max_image_bytes
        digest = _call(pacer, lambda: rt.client.fetch_digest(image.image_url, max_bytes=max_bytes))
    except ApiNotFound:
        return None, None
    except ApiError as err:
        return None, str(err)
    return digest, None


def _serves_original(rt: Runtime, pacer: Pacer, probe: CheckRow | None) -> bool:
    """Whether an owned image's URL serves the bytes its row hashed."""
    if probe is None or probe.image_id is None:
        return False
    digest, _ = _fetch(rt, pacer, probe.image_id)
    return digest is not None and digest.sha256 == probe.sha256


def _in_flight(rt: Runtime, since: float, now: float) -> _Windows:
    """When uploads were made whose answers the ledger may not have shown this check
    (`upload_spans`), give or take WINDOW_SLACK."""
    spans = upload_spans(rt.ledger, finished_since=since)
    return _Windows(
        [
            (start - WINDOW_SLACK, (now if end is None else end) + WINDOW_SLACK)
            for start, end in spans
        ]
    )


def _settle(
    rt: Runtime, pacer: Pacer, scan: _Scan, report: CheckReport, *, change: bool, since: float
) -> None:
    now = rt.clock()
    windows = {id(f): f.window(now) for f in scan.flagged}
    within = _Windows(list(windows.values()))
    in_flight = _in_flight(rt, since, now)
    candidates: dict[str, _Fetched] = {}
    flying: set[str] = set()  # in flight: maybe a new row's own image, never an extra copy
    for image_id, uploaded in _orphans(scan):
        kind = "in_flight" if uploaded in in_flight else "orphans"
        if kind == "in_flight":
            flying.add(image_id)
        setattr(report, kind, getattr(report, kind) + 1)
        report.example(kind, {"image_id": image_id, "upload_timestamp": uploaded})
        if scan.flagged and uploaded in within:
            candidates[image_id] = _Fetched(uploaded)
    for image_id, fetched in candidates.items():
        fetched.digest, fetched.error = _fetch(rt, pacer, image_id)
    flagged_hashes = {f.row.sha256 for f in scan.flagged if f.row.sha256}
    matched = any(
        f.digest is not None and f.digest.sha256 in flagged_hashes for f in candidates.values()
    )
    fetched_any = any(f.digest is not None for f in candidates.values())
    originals = matched or (fetched_any and _serves_original(rt, pacer, scan.probe))
    if fetched_any and not originals:
        report.note(NOTE_NOT_ORIGINAL)
    extra: dict[str, int] = {}  # orphan image id -> the file whose extra copy it is
    settled: list[tuple[_Flagged, list[str]]] = []
    for f in scan.flagged:
        start, end = windows[id(f)]
        near = {i: x for i, x in candidates.items() if start <= x.uploaded <= end}
        why = _unsettled_why(f, near, originals)
        if why is not None:
            report.duplicates_unsettled += 1
            report.example(
                "unsettled",
                {"file_id": f.row.id, "path": f.row.path, "state": f.row.state, "why": why},
            )
            continue
        copies = [
            i for i, x in near.items() if x.digest is not None and x.digest.sha256 == f.row.sha256
        ]
        if flying.intersection(copies):  # its bytes dropped again, that upload not recorded yet
            why = (
                "an image with its bytes was uploaded while a batch was in flight:"
                " check again once that upload is recorded"
            )
            report.duplicates_unsettled += 1
            report.example(
                "unsettled",
                {"file_id": f.row.id, "path": f.row.path, "state": f.row.state, "why": why},
            )
            continue
        # A row with no image of its own (it failed: its upload's answers were lost
        # until its attempts ran out) has no copy on Reka as far as the ledger
        # knows: the orphans with its bytes are extra copies too, deleted with
        # `fix`, and the row stays failed, for `retry` to send again.
        report.duplicates_settled += 1
        for i in copies:
            extra.setdefault(i, f.row.id)
        settled.append((f, copies))
        report.example(
            "settled",
            {
                "file_id": f.row.id,
                "path": f.row.path,
                "state": f.row.state,
                "image_id": f.row.image_id if f.own_on_server else None,
                "extra_copies": copies,
            },
        )
    _apply_settlement(rt, pacer, report, settled, extra, change=change)


def _unsettled_why(f: _Flagged, near: dict[str, _Fetched], originals: bool) -> str | None:
    """Why a flagged file's copies are not known, or None when they are."""
    if f.row.state in _IN_FLIGHT:
        return "still being uploaded: check again once it is final"
    if not f.row.sha256:
        return "no sha256 on record to compare with"
    failed = [i for i, x in near.items() if x.error is not None]
    if failed:
        return f"could not fetch {len(failed)} image(s) uploaded in its window: {failed[0]}"
    present = [i for i, x in near.items() if x.digest is not None]
    if present and not originals:
        return (
            f"{len(present)} orphan(s) uploaded in its window, and image_url does not serve"
            " the original bytes to compare"
        )
    return None


def _apply_settlement(
    rt: Runtime,
    pacer: Pacer,
    report: CheckReport,
    settled: list[tuple[_Flagged, list[str]]],
    extra: dict[str, int],
    *,
    change: bool,
) -> None:
    """Delete the extra copies and clear the flags (when `change`), or count what would be."""
    deleted: set[str] = set()
    failed: dict[str, str] = {}
    for image_id, file_id in extra.items():
        if not change:
            deleted.add(image_id)
            continue
        try:
            _call(pacer, lambda: rt.client.delete(image_id))  # noqa: B023 - called at once
        except ApiNotFound:
            pass  # gone already: not a copy any more either
        except ApiError as err:
            failed[image_id] = str(err)
            log.warning("serverside.delete_failed", image_id=image_id, error=str(err))
            continue
        deleted.add(image_id)
        log.info("serverside.extra_copy_deleted", image_id=image_id, file_id=file_id)
    report.fixed["extra_copies_deleted"] = len(deleted)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rt.clock()))
    notes: list[Settled] = []
    for f, copies in settled:
        if any(i in failed for i in copies):
            continue  # still two copies: stays flagged, the next check tries again
        if copies:
            text = (
                f"possible duplicate settled by reka-ingest check at {when}: extra"
                f" cop{'y' if len(copies) == 1 else 'ies'} {', '.join(copies)} deleted from Reka"
            )
            if not f.own_on_server:
                text += "; the file stays failed, and `reka-ingest retry` sends it again"
        elif f.own_on_server:
            text = f"possible duplicate settled by reka-ingest check at {when}: one copy on Reka"
        else:
            text = f"possible duplicate settled by reka-ingest check at {when}: no copy on Reka"
        notes.append(Settled(f.row.id, text))
    if change:
        report.fixed["flags_cleared"] = len(
            clear_possible_duplicates(rt.ledger, notes, now=rt.clock())
        )
    else:
        report.fixed["flags_cleared"] = len(notes)


def check_server(
    rt: Runtime,
    *,
    fix: bool = False,
    dry_run: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckReport:
    """Compare the ledger with what Reka holds; with `fix`, put right what can be
    (see the module's docstring); with `dry_run`, say what `fix` would do."""
    started, since = time.monotonic(), rt.clock()
    pacer = Pacer(rt.settings.ingest.check_requests_per_second, sleep=sleep)
    report = CheckReport()
    change = fix and not dry_run
    listed, odd = _list_all(rt, pacer)
    report.images_on_server = len(listed)
    scan = _Scan(listed, odd)
    missing = _scan_ledger(rt, pacer, scan, report, change=change, chunk_rows=chunk_rows)
    if not change:
        report.fixed["expired"] = missing if dry_run else 0
    _settle(rt, pacer, scan, report, change=change, since=since)
    if not fix and not dry_run:
        report.fixed = dict.fromkeys(report.fixed, 0)
    if dry_run:
        report.note(NOTE_DRY_RUN)
    report.requests = pacer.requests
    report.seconds = round(time.monotonic() - started, 3)
    log.info(
        "serverside.check",
        fix=fix,
        dry_run=dry_run,
        images_on_server=report.images_on_server,
        rows_checked=report.rows_checked,
        orphans=report.orphans,
        in_flight=report.in_flight,
        missing=report.missing,
        drift=report.drift,
        duplicates_settled=report.duplicates_settled,
        duplicates_unsettled=report.duplicates_unsettled,
        requests=report.requests,
        seconds=report.seconds,
        **report.fixed,
    )
    return report


# --- delete on request ---------------------------------------------------------------


@dataclass
class DeleteReport:
    """What `delete_images` matched and did (with `dry_run`: would do)."""

    matched: int = 0  # rows matching the selection
    images: int = 0  # distinct image ids among them
    deleted: int = 0  # images Delete Image removed
    already_gone: int = 0  # images the server no longer had (404): recorded deleted too
    failed: dict[str, str] = field(default_factory=dict)  # image id -> error
    # image id -> error, for a request that may have reached the server (a read timeout,
    # a connection dropped mid-way): deleted or not, nobody knows; its rows are left as
    # they were, for `reka-ingest check` to settle against what the server holds.
    unknown: dict[str, str] = field(default_factory=dict)
    rows_marked: int = 0  # rows recorded `deleted` (matching rows, and rows sharing their image)
    examples: list[dict[str, object]] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows `reka-ingest delete` is about; every filter given must match."""

    path_glob: str | None = None
    image_id: str | None = None
    state: str | None = None
    since: float | None = None
    until: float | None = None

    def empty(self) -> bool:
        return all(
            v is None for v in (self.path_glob, self.image_id, self.state, self.since, self.until)
        )


def select_for_delete(rt: Runtime, selection: Selection) -> list[Deletable]:
    """The rows with an image id that match `selection` (none when it is empty)."""
    if selection.empty():
        return []
    return deletable_rows(
        rt.ledger,
        path_glob=selection.path_glob,
        image_id=selection.image_id,
        state=selection.state,
        since=selection.since,
        until=selection.until,
    )


class _DeleteAttempt:
    """One image's Delete Image call, tried as often as `_call` retries it; remembers
    whether any try may have reached the server (`ApiTransportError.maybe_sent`: a
    read timeout, a connection dropped mid-way), after which a later error does not
    mean the image is still there."""

    def __init__(self, rt: Runtime, image_id: str) -> None:
        self.rt = rt
        self.image_id = image_id
        self.maybe_done = False

    def __call__(self) -> object:
        try:
            return self.rt.client.delete(self.image_id)
        except ApiTransportError as err:
            self.maybe_done = self.maybe_done or err.maybe_sent
            raise


def delete_images(
    rt: Runtime,
    rows: list[Deletable],
    *,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> DeleteReport:
    """Delete each row's image from Reka and record every row holding it `deleted`
    (reason `deleted`, a time and a message); the files' bytes stay where they are.
    An image the server no longer has (404) is recorded deleted as well. An image
    whose request may have reached the server without an answer (`DeleteReport.unknown`)
    is recorded neither way: its rows stay as they were."""
    started = time.monotonic()
    pacer = Pacer(rt.settings.ingest.check_requests_per_second, sleep=sleep)
    report = DeleteReport(matched=len(rows), dry_run=dry_run)
    image_ids = list(dict.fromkeys(r.image_id for r in rows))
    report.images = len(image_ids)
    report.examples = [
        {"file_id": r.id, "path": r.path, "image_id": r.image_id, "state": r.state}
        for r in rows[:EXAMPLES]
    ]
    if dry_run:
        report.rows_marked = len(rows_holding(rt.ledger, image_ids))
        return report
    gone: dict[str, str] = {}
    for image_id in image_ids:
        attempt = _DeleteAttempt(rt, image_id)
        try:
            _call(pacer, attempt)
        except ApiNotFound:
            report.already_gone += 1
            gone[image_id] = "already gone from Reka (404)"
            continue
        except ApiError as err:
            if attempt.maybe_done:
                report.unknown[image_id] = str(err)
                log.warning("serverside.delete_unknown", image_id=image_id, error=str(err))
            else:
                report.failed[image_id] = str(err)
                log.warning("serverside.delete_failed", image_id=image_id, error=str(err))
            continue
        report.deleted += 1
        gone[image_id] = "deleted from Reka"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rt.clock()))
    marks = [
        Gone(
            r.id,
            r.state,
            f"image {r.image_id} {gone[r.image_id]} on request (reka-ingest delete at {when});"
            " the file's bytes were left where they were",
        )
        for r in rows_holding(rt.ledger, gone)
    ]
    report.rows_marked = len(
        mark_gone(rt.ledger, marks, state=FileState.DELETED, reason=Reason.DELETED, now=rt.clock())
    )
    report.requests = pacer.requests
    report.seconds = round(time.monotonic() - started, 3)
    log.info(
        "serverside.delete",
        matched=report.matched,
        images=report.images,
        deleted=report.deleted,
        already_gone=report.already_gone,
        failed=len(report.failed),
        unknown=len(report.unknown),
        rows_marked=report.rows_marked,
        requests=report.requests,
    )
    return report
