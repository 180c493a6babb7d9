"""Notifications: JSON events POSTed to INGEST_NOTIFY_URL.

Beat's notify sweep (`notify_sweep`, run by a worker) reads the ledger and the
shared budget, decides which events are due, and enqueues one post task per
event (`deliver`, retried with backoff); the watcher never posts, so a slow or
dead webhook never holds up intake. Nothing runs when INGEST_NOTIFY_URL is unset.

Events, each `{"event", "id", "at", "service", "deployment", ...}`:

- `drop_settled`: a folder's drop has settled. A file's folder is the first
  segment of its path under the inbox (or the scanned root), `.` for files
  dropped straight into it. A folder's drop is its files seen since its last
  `drop_settled` (file ids above the last one announced). It has settled when
  every file of the folder is final and none was seen or finished for
  INGEST_NOTIFY_SETTLE_AFTER seconds, so files trickling in join the drop
  rather than each making an event.
- `failures_threshold`: at least INGEST_NOTIFY_FAILURES files failed within the
  last INGEST_NOTIFY_WINDOW seconds; at most one event per window.
- `quota_exhausted` / `quota_refilled`: the daily upload requests are used up
  (or the API asked every worker to pause for NOTIFY_QUOTA_PAUSE_MIN or more),
  and a request may go again. A `quota_exhausted` never follows a
  `quota_refilled` within INGEST_NOTIFY_WINDOW: a rolling window that frees one
  request at a time, taken at once, does not flap.

Once only, with many workers and one beat (or two): each event is claimed by
one atomic step on a marker in Redis (a compare-and-set of the folder's last
announced file id, a SET NX of the failures window, a compare-and-set of the
quota state) before it is enqueued, and the marker is put back if the enqueue
fails. The markers live in Redis (persisted by the bundled server), keyed by
hashes, never by names or secrets; a Redis that lost its data may announce
again a drop that settled within the last NOTIFY_DROP_HORIZON.

Delivery is at least once: a post whose answer was lost is sent again, with the
same `id`, which a receiver can use to drop the copy. A body never holds a
secret: no API key, no Redis URL, no webhook URL (shown masked in logs).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import httpx
import redis
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError

from reka_ingest.core.constants import (
    NOTIFY_DROP_HORIZON,
    NOTIFY_DROP_KEY,
    NOTIFY_DROP_SLACK,
    NOTIFY_DROPS_THROUGH_KEY,
    NOTIFY_EXAMPLES,
    NOTIFY_FAILURES_KEY,
    NOTIFY_PATH_CHARS,
    NOTIFY_QUOTA_KEY,
    NOTIFY_QUOTA_PAUSE_MIN,
    NOTIFY_TOP_REASONS,
)
from reka_ingest.core.errors import IngestError, PermanentError, RetryableError
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import Settings, mask_webhook
from reka_ingest.core.states import FileState
from reka_ingest.ledger.notify import Drop, Folder, drop_of, failures_between, finished_folders
from reka_ingest.metrics.counters import redis_client

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = get_logger(__name__)

SERVICE: Final = "reka-ingest"
DROP_SETTLED: Final = "drop_settled"
FAILURES_THRESHOLD: Final = "failures_threshold"
QUOTA_EXHAUSTED: Final = "quota_exhausted"
QUOTA_REFILLED: Final = "quota_refilled"
EVENTS: Final = (DROP_SETTLED, FAILURES_THRESHOLD, QUOTA_EXHAUSTED, QUOTA_REFILLED)
ROOT_FOLDER: Final = "."

Body = dict[str, Any]
Send = Callable[[Body], object]


class NotifyUnavailable(RetryableError):
    """The webhook gave no answer, or a 5xx, 408 or 429: the post is tried again."""


class NotifyRejected(PermanentError):
    """The webhook refused the event (another 4xx, or a redirect): not tried again."""


# --- posting ---------------------------------------------------------------------


class Notifier:
    """The webhook of one worker process: one HTTP client, explicit timeouts."""

    def __init__(
        self, url: SecretStr, *, timeout: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._url = url
        self.shown = mask_webhook(url.get_secret_value())
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"user-agent": SERVICE},
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier | None:
        url = settings.ingest.notify_url
        return None if url is None else cls(url, timeout=settings.ingest.notify_timeout)

    def post(self, body: Mapping[str, Any]) -> int:
        """POST `body` as JSON; the status of a 2xx answer, or NotifyUnavailable/NotifyRejected.

        httpx's errors are translated here, by type only: their text may name the URL.
        """
        try:
            response = self._client.post(self._url.get_secret_value(), json=dict(body))
        except httpx.TimeoutException as err:
            raise NotifyUnavailable(
                f"the webhook did not answer in time ({type(err).__name__})"
            ) from None
        except httpx.HTTPError as err:
            raise NotifyUnavailable(f"no answer from the webhook ({type(err).__name__})") from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise NotifyUnavailable(f"the webhook answered {status}")
        if not 200 <= status < 300:
            raise NotifyRejected(f"the webhook answered {status}")
        return status

    def close(self) -> None:
        self._client.close()


def deliver(notifier: Notifier | None, body: Mapping[str, Any]) -> int | None:
    """Post one event (the post task's body); None when notifications are off."""
    if notifier is None:
        log.info("notify_skipped", kind=body.get("event"), why="INGEST_NOTIFY_URL is unset")
        return None
    started = time.monotonic()
    status = notifier.post(body)
    log.info(
        "notify_sent",
        kind=body.get("event"),
        id=body.get("id"),
        status=status,
        to=notifier.shown,
        duration=round(time.monotonic() - started, 3),
    )
    return status


# --- event bodies ------------------------------------------------------------------


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC (`2025-05-01T12:00:00Z`)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def deployment(settings: Settings) -> str:
    """The deployment's name in events: INGEST_NOTIFY_DEPLOYMENT, or the data folder's path."""
    return settings.ingest.notify_deployment or str(settings.ingest.data_dir.resolve())


def envelope(settings: Settings, event: str, event_id: str, now: float) -> Body:
    return {
        "event": event,
        "id": event_id,
        "at": iso(now),
        "service": SERVICE,
        "deployment": deployment(settings),
    }


def _bounded(text: str) -> str:
    return text if len(text) <= NOTIFY_PATH_CHARS else text[: NOTIFY_PATH_CHARS - 1] + "…"


def drop_body(settings: Settings, drop: Drop, event_id: str, now: float) -> Body:
    order = {state.value: i for i, state in enumerate(FileState)}
    return envelope(settings, DROP_SETTLED, event_id, now) | {
        "folder": _bounded(drop.folder.name) or ROOT_FOLDER,
        "root": _bounded(drop.folder.root),
        "files": drop.files,
        "counts": dict(sorted(drop.counts.items(), key=lambda kv: order.get(kv[0], 99))),
        "reasons": dict(sorted(drop.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "first_seen_at": iso(drop.first_seen_at),
        "last_finished_at": iso(drop.last_finished_at),
        "file_ids": {"after": drop.after_id, "through": drop.last_id},
    }


# --- detection ---------------------------------------------------------------------

# KEYS: key.  ARGV: expected ('' = absent), new ('' = delete), ttl seconds.  1 if set.
_SWAP: Final = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
"""

# KEYS: key.  ARGV: value, ttl seconds.  Raises the number stored to `value`, never lowers it.
_RAISE: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""

# KEYS: quota hash.  ARGV: observed state, now, hold seconds.
# Nil when nothing changed; else {previous state ('' = none), since when}.
_QUOTA: Final = """
local prev = redis.call('HGET', KEYS[1], 'state')
local at = redis.call('HGET', KEYS[1], 'at') or '0'
if prev == ARGV[1] then return nil end
if ARGV[1] == 'exhausted' and prev == 'ok'
    and tonumber(ARGV[2]) - tonumber(at) < tonumber(ARGV[3]) then
  return nil
end
local stamp = ARGV[2]
if not prev then
  prev = ''
  if ARGV[1] == 'ok' then stamp = '0' end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'at', stamp)
return {prev, at}
"""

# KEYS: quota hash.  ARGV: state and at we set, state and at to put back ('' = none).
_QUOTA_UNDO: Final = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'at') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('DEL', KEYS[1])
else redis.call('HSET', KEYS[1], 'state', ARGV[3], 'at', ARGV[4]) end
return 1
"""

_DROP_TTL: Final = int(NOTIFY_DROP_HORIZON) + 24 * 60 * 60
_QUOTA_OK: Final = "ok"
_QUOTA_OUT: Final = "exhausted"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _eval(r: redis.Redis[bytes], script: str, keys: list[str], *args: object) -> Any:
    return r.eval(script, len(keys), *keys, *args)  # type: ignore[no-untyped-call]


def _announce(send: Send, body: Body, undo: Callable[[], object]) -> bool:
    """Enqueue the post of `body`, claimed already; on failure put the claim back."""
    try:
        send(body)
    except Exception as err:  # noqa: BLE001 - any enqueue failure: unclaim, the next sweep retries
        log.warning("notify_enqueue_failed", kind=body["event"], error=type(err).__name__)
        try:
            undo()
        except redis.RedisError as undo_err:
            log.warning("notify_unclaim_failed", kind=body["event"], error=str(undo_err))
        return False
    log.info("notify_event", kind=body["event"], id=body["id"])
    return True


def folder_hash(folder: Folder) -> str:
    return hashlib.sha256(f"{folder.root}\0{folder.name}".encode()).hexdigest()[:32]


def drop_events(rt: Runtime, r: redis.Redis[bytes], send: Send, now: float) -> list[Body]:
    """Announce each folder whose drop has settled since the last sweep (see the module doc).

    Folders are found by their files finished since the last sweep looked (minus
    NOTIFY_DROP_SLACK), up to INGEST_NOTIFY_SETTLE_AFTER ago; each announced
    drop moves its folder's marker to its last file id, by compare-and-set, so
    two sweeps at once announce it once.
    """
    settings = rt.settings
    until = now - settings.ingest.notify_settle_after
    horizon = now - NOTIFY_DROP_HORIZON
    raw_through = r.get(NOTIFY_DROPS_THROUGH_KEY)
    since = horizon
    if raw_through is not None:
        since = max(horizon, float(_text(raw_through)) - NOTIFY_DROP_SLACK)
    if until <= since:
        return []
    sent: list[Body] = []
    unsent = 0
    for folder in finished_folders(rt.ledger, since=since, until=until):
        key = NOTIFY_DROP_KEY.format(h=folder_hash(folder))
        raw = r.get(key)
        marker = _text(raw) if raw is not None else ""
        drop = drop_of(rt.ledger, folder, after_id=int(marker or 0), horizon=horizon)
        if drop is None or not drop.settled or drop.last_activity > until:
            continue  # nothing new, or not yet: a later finish makes it a candidate again
        claimed = str(drop.last_id)
        if not _eval(r, _SWAP, [key], marker, claimed, _DROP_TTL):
            continue  # another sweep announced it first
        event_id = f"{DROP_SETTLED}:{folder_hash(folder)}:{claimed}"
        body = drop_body(settings, drop, event_id, now)

        def undo(key: str = key, claimed: str = claimed, marker: str = marker) -> object:
            return _eval(r, _SWAP, [key], claimed, marker, _DROP_TTL)

        if _announce(send, body, undo):
            sent.append(body)
        else:
            unsent += 1
    if not unsent:  # else the next sweep looks at the same folders again
        _eval(r, _RAISE, [NOTIFY_DROPS_THROUGH_KEY], repr(until), int(NOTIFY_DROP_HORIZON))
    return sent


def failure_events(rt: Runtime, r: redis.Redis[bytes], send: Send, now: float) -> list[Body]:
    """One `failures_threshold` event when the window's failures reach the threshold,
    then none until the window has passed (a key set NX, expiring with it)."""
    settings = rt.settings
    threshold, window = settings.ingest.notify_failures, settings.ingest.notify_window
    if threshold <= 0 or r.exists(NOTIFY_FAILURES_KEY):
        return []
    since = now - window
    failures = failures_between(
        rt.ledger, since=since, until=now, top=NOTIFY_TOP_REASONS, examples=NOTIFY_EXAMPLES
    )
    if failures.count < threshold:
        return []
    stamp = repr(now)
    if not r.set(NOTIFY_FAILURES_KEY, stamp, nx=True, px=max(1, int(window * 1000))):
        return []
    body = envelope(settings, FAILURES_THRESHOLD, f"{FAILURES_THRESHOLD}:{stamp}", now) | {
        "count": failures.count,
        "threshold": threshold,
        "window_seconds": window,
        "since": iso(since),
        "until": iso(now),
        "reasons": [{"reason": reason, "count": n} for reason, n in failures.reasons],
        "examples": [
            {"path": _bounded(path), "reason": reason} for path, reason in failures.examples
        ],
    }
    undo = lambda: _eval(r, _SWAP, [NOTIFY_FAILURES_KEY], stamp, "", 1)  # noqa: E731
    return [body] if _announce(send, body, undo) else []


def quota_events(rt: Runtime, r: redis.Redis[bytes], send: Send, now: float) -> list[Body]:
    """`quota_exhausted` when the shared budget has no request left (or the API paused
    every worker for long), `quota_refilled` when one may go again; each transition
    claimed once, in one script on the state last announced."""
    settings = rt.settings
    snap = rt.budget.snapshot(now)
    if snap.error is not None:
        return []
    counted_out = snap.limit is not None and snap.remaining == 0
    server_out = snap.paused_until is not None and snap.paused_until - now >= NOTIFY_QUOTA_PAUSE_MIN
    observed = _QUOTA_OUT if counted_out or server_out else _QUOTA_OK
    stamp = repr(now)
    change = _eval(r, _QUOTA, [NOTIFY_QUOTA_KEY], observed, stamp, settings.ingest.notify_window)
    if change is None:
        return []
    previous, since = _text(change[0]), float(_text(change[1]))
    if observed == _QUOTA_OUT:
        refills = [t for t in (snap.refills_at if counted_out else None, snap.paused_until) if t]
        body = envelope(settings, QUOTA_EXHAUSTED, f"{QUOTA_EXHAUSTED}:{stamp}", now) | {
            "why": "daily_limit" if counted_out else "server_pause",
            "limit": snap.limit,
            "used": snap.used,
            "remaining": snap.remaining,
            "refills_at": iso(max(refills) if refills else None),
        }
    elif previous == _QUOTA_OUT:
        body = envelope(settings, QUOTA_REFILLED, f"{QUOTA_REFILLED}:{stamp}", now) | {
            "limit": snap.limit,
            "used": snap.used,
            "remaining": snap.remaining,
            "exhausted_at": iso(since),
        }
    else:
        return []  # the first look, with requests left: nothing to say

    def undo() -> object:
        return _eval(r, _QUOTA_UNDO, [NOTIFY_QUOTA_KEY], observed, stamp, previous, repr(since))

    return [body] if _announce(send, body, undo) else []


_DETECTORS: Final = (
    ("quota", quota_events),
    ("failures", failure_events),
    ("drops", drop_events),
)


def notify_sweep(rt: Runtime, send: Send, client: redis.Redis[bytes] | None = None) -> list[Body]:
    """Beat's notify sweep: every event due now, each enqueued once (`send(body)`).

    Off (nothing read) when INGEST_NOTIFY_URL is
    unset. A detector that cannot read Redis or the ledger is logged and
    skipped; the next sweep looks again.
    """
    settings = rt.settings
    if settings.ingest.notify_url is None:
        return []
    own = client is None
    r = client if client is not None else redis_client(settings.ingest.broker_url)
    now = rt.clock()
    sent: list[Body] = []
    try:
        for name, detect in _DETECTORS:
            try:
                sent += detect(rt, r, send, now)
            except (redis.RedisError, SQLAlchemyError, IngestError) as err:
                log.warning("notify_sweep_failed", detector=name, error=type(err).__name__)
    finally:
        if own:
            r.close()
    return sent
