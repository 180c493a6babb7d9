"""The shared API budget as every view reads it: one reading, one wording.

The workers count upload requests in Redis (worker.budget) and publish there,
at `BUDGET_KEY`, the rule they count by: the API key's fingerprint (`fp`),
`limit` (requests per window; 0 = no daily limit), `per_second` and `window`.
`reka-ingest run` publishes the same rule before its first worker starts. So
a view needs nothing but the Redis URL: the banner, `status`, `status --json`,
`status --watch` and `/metrics` all call `read_budget` and word it with
`budget_words`, whatever INGEST_UPLOADS_PER_DAY their own shell has.

`used` is counted live from the request window (requests in the last
`window` seconds, counted even with no daily limit), never a stale copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import redis

from reka_ingest.core.constants import (
    BUDGET_KEY,
    BUDGET_PAUSE_KEY,
    BUDGET_WINDOW_KEY,
    RATE_LIMIT_WINDOW_SECONDS,
)

NOT_PUBLISHED: Final = "no worker has published its budget to this Redis yet"


def window_key(fp: str) -> str:
    return BUDGET_WINDOW_KEY.format(fp=fp)


def pause_key(fp: str) -> str:
    return BUDGET_PAUSE_KEY.format(fp=fp)


@dataclass(frozen=True, slots=True)
class BudgetView:
    """The budget as read at one moment; numbers are None when unknown or unlimited.

    `known`: the rule is published (else nothing but `error` may be set);
    `limit` None with `known`: no daily limit (INGEST_UPLOADS_PER_DAY=0).
    """

    known: bool
    limit: int | None = None
    used: int | None = None
    remaining: int | None = None
    refills_at: float | None = None  # when the next slot frees (the oldest request leaves)
    paused_until: float | None = None  # set while the server's pause holds
    per_second: int | None = None
    window: float = float(RATE_LIMIT_WINDOW_SECONDS)
    error: str | None = None

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "known": self.known,
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "refills_at": self.refills_at,
            "paused_until": self.paused_until,
            "per_second": self.per_second,
            "window_seconds": self.window,
            "error": self.error,
            "summary": budget_words(self, now, brief=True),
            "text": budget_words(self, now),
        }


def view_for(
    client: redis.Redis[bytes],
    *,
    fp: str,
    per_day: int,
    per_second: int = 0,
    window: float = float(RATE_LIMIT_WINDOW_SECONDS),
    now: float,
) -> BudgetView:
    """The budget of key `fp` under this rule; raises redis.RedisError."""
    low = f"({now - window!r}"
    with client.pipeline(transaction=True) as pipe:
        pipe.zcount(window_key(fp), low, "+inf")
        pipe.zrangebyscore(window_key(fp), low, "+inf", start=0, num=1, withscores=True)
        pipe.get(pause_key(fp))
        used, oldest, paused = pipe.execute()
    paused_until = float(paused) if paused is not None and float(paused) > now else None
    common: dict[str, Any] = {
        "known": True,
        "used": int(used),
        "paused_until": paused_until,
        "per_second": per_second or None,
        "window": window,
    }
    if per_day == 0:
        return BudgetView(**common)
    refills_at = float(oldest[0][1]) + window if oldest else None
    return BudgetView(
        limit=per_day,
        remaining=max(0, per_day - int(used)),
        refills_at=refills_at,
        **common,
    )


def read_budget(client: redis.Redis[bytes], *, now: float) -> BudgetView:
    """The published budget, read live; never raises for Redis (the view says why)."""
    try:
        rule = {_s(k): _s(v) for k, v in client.hgetall(BUDGET_KEY).items()}
        if "fp" not in rule or "limit" not in rule:
            return BudgetView(known=False)
        return view_for(
            client,
            fp=rule["fp"],
            per_day=int(float(rule["limit"])),
            per_second=int(float(rule.get("per_second", "0"))),
            window=float(rule.get("window", RATE_LIMIT_WINDOW_SECONDS)),
            now=now,
        )
    except redis.RedisError as err:
        return BudgetView(known=False, error=f"Redis did not answer ({type(err).__name__})")
    except ValueError:
        return BudgetView(known=False, error=f"unreadable budget at {BUDGET_KEY}")


def publish_rule(
    client: redis.Redis[bytes],
    *,
    fp: str,
    per_day: int,
    per_second: int,
    window: float = float(RATE_LIMIT_WINDOW_SECONDS),
) -> None:
    """Publish the rule the workers count by (they also do so with every request)."""
    client.hset(
        BUDGET_KEY,
        mapping={"fp": fp, "limit": per_day, "per_second": per_second, "window": repr(window)},
    )


def duration(seconds: float | None) -> str:
    """`1h 05m`, `4m 09s`, `7s`; `unknown` for None."""
    if seconds is None:
        return "unknown"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def budget_words(view: BudgetView, now: float, *, brief: bool = False) -> str:
    """The one wording of the budget, used by every view.

    `brief`: the first clause only (what is left, or `unlimited`), which does not
    change from second to second; the full text adds what was used, when the next
    slot frees and any pause the server asked for.
    """
    if view.error is not None:
        return f"unknown ({view.error})"
    if not view.known:
        return f"unknown ({NOT_PUBLISHED})"
    if view.limit is None:
        head = "unlimited (INGEST_UPLOADS_PER_DAY=0)"
    else:
        head = f"{view.remaining} of {view.limit} upload requests left"
    if brief:
        return head
    span = "24 h" if view.window == RATE_LIMIT_WINDOW_SECONDS else duration(view.window)
    parts = [head, f"{view.used} used in the last {span}"]
    if view.per_second:
        parts.append(f"at most {view.per_second} a second")
    if view.limit is not None and view.refills_at is not None:
        parts.append(f"next slot frees in {duration(max(0.0, view.refills_at - now))}")
    if view.paused_until is not None:
        parts.append(f"paused by the API for {duration(view.paused_until - now)}")
    return "; ".join(parts)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
