"""The shared API budget: one count of upload requests for every worker on every machine.

Reka counts upload requests per API key over a rolling 24 hours (100 on the
standard tier). A per-worker `rate_limit` cannot keep a fleet inside that, so
the count lives in Redis, next to the broker:

- `try_acquire(now)` takes one slot or says how long to wait: `Grant` or
  `Wait(until)`. One Lua script trims the window, counts and adds the request
  atomically, so two workers never both take the last slot.
- `follow(info)` feeds each upload response's rate-limit headers back: a 429's
  `retry-after`, or `x-ratelimit-requests-remaining: 0` with
  `x-ratelimit-requests-reset`, pauses every worker until then.
- `snapshot(now)` says what is left and when it refills, through the one reading
  every view shares (reka_ingest.metrics.budget).

Times come from the injected clock (the runtime's `rt.clock`), never from
Redis, so tests move time; machines are expected to keep their clocks in sync
(NTP), as the ledger's times already are.

Redis keys (named in `reka_ingest.core.constants`; the API key by its
fingerprint, a short hash, never the key itself):

    BUDGET_KEY          hash: the rule counted by (fp, limit, per_second,
                        window), published with every request and at start,
                        for every view (reka_ingest.metrics.budget)
    BUDGET_WINDOW_KEY   sorted set: one member per request, scored by its time;
                        trimmed to the window; counted with no daily limit too,
                        so every view can say how many were used
    BUDGET_PAUSE_KEY    string: epoch seconds the server asked us to wait until

When Redis cannot be reached, `try_acquire` answers `Wait(now +
REDIS_DOWN_WAIT)` with `why=WaitReason.REDIS_UNAVAILABLE`: never unlimited traffic,
never an exception into the task. The uploader defers the batch in the ledger
for that short time, without spending an attempt; Redis is the broker too, so
little else moves while it is down. `follow` logs and drops a Redis error (the
server will say 429 again); `snapshot` reports the error instead of numbers.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis

from reka_ingest.core.constants import (
    API_KEY_FINGERPRINT_CHARS,
    BUDGET_KEY,
    BUDGET_KEY_TTL_MARGIN,
    RATE_LIMIT_WINDOW_SECONDS,
    RATE_LIMITED_PAUSE,
    REDIS_DOWN_WAIT,
    REDIS_TIMEOUT,
    STANDIN_DEV_API_KEY,
)
from reka_ingest.core.errors import RateLimitInfo
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import WaitReason
from reka_ingest.metrics.budget import BudgetView, pause_key, publish_rule, view_for, window_key

log = get_logger(__name__)


def fingerprint(api_key: str | None) -> str:
    """A short, stable name for an API key: the first hex digits of its SHA-256.

    No key configured means the local stand-in server, which `reka-ingest run`
    starts with its documented key; `status` in another shell then reads the
    same budget as the workers.
    """
    if not api_key:
        api_key = STANDIN_DEV_API_KEY
    return hashlib.sha256(api_key.encode()).hexdigest()[:API_KEY_FINGERPRINT_CHARS]


__all__ = ["Budget", "BudgetSnapshot", "Grant", "Wait", "pause_key", "window_key"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One request may go now. `remaining`: slots left today (None: no daily limit)."""

    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """No request before `until` (epoch seconds), and why."""

    until: float
    why: WaitReason


# What every view reads (reka_ingest.metrics.budget); the worker's own name for it.
BudgetSnapshot = BudgetView


# KEYS: window, pause, published.  ARGV: now, per_day, window, per_second, member,
# ttl margin, fp.
# Replies {"grant", remaining (-1: no daily limit)} or {"wait", until, why (a WaitReason)}.
_ACQUIRE: Final = """
local now = tonumber(ARGV[1])
local per_day = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local per_second = tonumber(ARGV[4])
local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end

redis.call('HSET', KEYS[3], 'fp', ARGV[7], 'limit', int(per_day), 'per_second',
  int(per_second), 'window', num(window))
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {'wait', num(paused), 'server_pause'}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now - window))
local used = redis.call('ZCARD', KEYS[1])
if per_day > 0 and used >= per_day then
  local freeing = redis.call('ZRANGE', KEYS[1], used - per_day, used - per_day, 'WITHSCORES')
  local until_ = tonumber(freeing[2]) + window
  return {'wait', num(until_), 'daily_limit'}
end
if per_second > 0 then
  local recent = redis.call('ZCOUNT', KEYS[1], '(' .. num(now - 1), '+inf')
  if recent >= per_second then
    local freeing = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. num(now - 1), '+inf',
      'WITHSCORES', 'LIMIT', recent - per_second, 1)
    return {'wait', num(tonumber(freeing[2]) + 1), 'per_second'}
  end
end
redis.call('ZADD', KEYS[1], num(now), ARGV[5])
redis.call('EXPIRE', KEYS[1], math.ceil(window) + tonumber(ARGV[6]))
if per_day == 0 then
  return {'grant', '-1'}
end
return {'grant', int(per_day - used - 1)}
"""

# KEYS: pause.  ARGV: until, ttl seconds.  Replies the pause now in force.
_PAUSE: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
"""


def redis_client(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )


def pause_for(info: RateLimitInfo, *, rate_limited: bool) -> float | None:
    """Seconds every worker must wait after a response with these headers; None: no pause.

    A 429 waits its `retry-after` (or the reset, or RATE_LIMITED_PAUSE when it
    named neither); any answer with `remaining` 0 waits for its reset.
    """
    waits: list[float] = []
    if info.remaining == 0 and info.reset_seconds:
        waits.append(info.reset_seconds)
    if rate_limited:
        waits.append(info.retry_after_seconds or 0.0)
        if not any(waits):
            waits.append(RATE_LIMITED_PAUSE)
    longest = max(waits, default=0.0)
    return longest if longest > 0 else None


class Budget:
    """The upload budget of one API key, shared through Redis; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        fp: str,
        per_day: int,
        per_second: int = 0,
        window: float = RATE_LIMIT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_day < 0 or per_second < 0 or window <= 0:
            raise ValueError("limits must be >= 0 and the window > 0")
        self._redis = client
        self.fp = fp
        self.per_day = per_day
        self.per_second = per_second
        self.window = window
        self._clock = clock
        self._keys = (window_key(fp), pause_key(fp), BUDGET_KEY)
        self._acquire = client.register_script(_ACQUIRE)
        self._pause = client.register_script(_PAUSE)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.time) -> Budget:
        key = settings.reka.api_key
        return cls(
            redis_client(settings.ingest.broker_url),
            fp=fingerprint(key.get_secret_value() if key is not None else None),
            per_day=settings.ingest.uploads_per_day,
            per_second=settings.ingest.uploads_per_second,
            clock=clock,
        )

    @property
    def unlimited(self) -> bool:
        return self.per_day == 0 and self.per_second == 0

    def close(self) -> None:
        self._redis.close()

    def try_acquire(self, now: float | None = None) -> Grant | Wait:
        """Take one request slot now, or say until when none is free."""
        now = self._clock() if now is None else now
        member = f"{now!r}:{secrets.token_hex(6)}"
        args = [
            repr(now),
            self.per_day,
            repr(float(self.window)),
            self.per_second,
            member,
            BUDGET_KEY_TTL_MARGIN,
            self.fp,
        ]
        try:
            reply = self._acquire(keys=list(self._keys), args=args)
        except redis.RedisError as err:
            log.warning("budget_unavailable", fp=self.fp, error=type(err).__name__)
            return Wait(now + REDIS_DOWN_WAIT, WaitReason.REDIS_UNAVAILABLE)
        kind = _text(reply[0])
        if kind == "grant":
            remaining = int(_text(reply[1]))
            return Grant(None if remaining < 0 else remaining)
        return Wait(float(_text(reply[1])), WaitReason(_text(reply[2])))

    def follow(
        self, info: RateLimitInfo, *, rate_limited: bool = False, now: float | None = None
    ) -> float | None:
        """Pause every worker as the server's headers say; returns the pause in force, if any."""
        wait = pause_for(info, rate_limited=rate_limited)
        if wait is None:
            return None
        now = self._clock() if now is None else now
        until = now + wait
        try:
            reply = self._pause(
                keys=[self._keys[1]],
                args=[repr(until), math.ceil(wait) + BUDGET_KEY_TTL_MARGIN],
            )
        except redis.RedisError as err:
            log.warning("budget_unavailable", fp=self.fp, error=type(err).__name__)
            return until
        in_force = float(_text(reply))
        log.info("budget_paused", fp=self.fp, until=in_force, rate_limited=rate_limited)
        return in_force

    def publish(self) -> None:
        """Say in Redis which rule this worker counts by, before its first request, so
        every view reads the budget from there (reka_ingest.metrics.budget)."""
        try:
            publish_rule(
                self._redis,
                fp=self.fp,
                per_day=self.per_day,
                per_second=self.per_second,
                window=float(self.window),
            )
        except redis.RedisError as err:
            log.warning("budget_unavailable", fp=self.fp, error=type(err).__name__)

    def snapshot(self, now: float | None = None) -> BudgetSnapshot:
        """What is used and left, when the next slot frees, and any server pause: the
        reading every view shares, under this budget's own rule."""
        now = self._clock() if now is None else now
        try:
            return view_for(
                self._redis,
                fp=self.fp,
                per_day=self.per_day,
                per_second=self.per_second,
                window=float(self.window),
                now=now,
            )
        except redis.RedisError as err:
            return BudgetView(known=False, error=f"Redis did not answer ({type(err).__name__})")


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
