"""A time zone named by a setting: an IANA name (`Europe/Oslo`) or a fixed offset (`+02:00`)."""

from __future__ import annotations

import re
from datetime import UTC, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_OFFSET = re.compile(r"^(?P<sign>[+-])(?P<hours>\d{2}):?(?P<minutes>\d{2})$")


def parse_zone(text: str) -> tzinfo:
    """The zone `text` names; `ValueError` saying what is wrong otherwise."""
    name = text.strip()
    if name.upper() in ("UTC", "Z"):
        return UTC
    offset = _OFFSET.match(name)
    if offset is not None:
        hours, minutes = int(offset["hours"]), int(offset["minutes"])
        if hours > 14 or minutes > 59:
            raise ValueError(f"{text!r} is not an offset between -14:00 and +14:00")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if offset["sign"] == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{text!r} is neither an IANA zone name (Europe/Oslo) nor an offset (+02:00)"
        ) from None
