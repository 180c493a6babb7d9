"""The stand-in server's settings, parsed once at start. Environment prefix `STANDIN_`.

`StandinConfig` is frozen: it is what the server was started with. The fault
knobs (`FaultKnobs`) are copied out of it into the app's mutable state, because
`POST /_standin/faults` changes them at runtime and `POST /_standin/reset`
restores them from here.

Every field is also a flag of `reka-ingest fake-api` (reka_ingest/cli/fake_api.py),
except the `fetch_*` settings of URL uploads, which are read from the
environment only (`STANDIN_FETCH_TIMEOUT`, ...) until the command grows flags.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reka_ingest.core import constants as c

# How the stand-in fetches the images of a URL upload (reka_ingest.standin.fetch).
FETCH_TIMEOUT_DEFAULT: Final = 30.0  # seconds for one URL, whole: connect, redirects, body
FETCH_MAX_REDIRECTS_DEFAULT: Final = 5
FETCH_CONCURRENCY_DEFAULT: Final = 8  # URLs of one request fetched at once

# Shares are probabilities; anything outside [0, 1] is a typo, not a wish.
_Share = Annotated[float, Field(ge=0.0, le=1.0)]


class DropWhen(StrEnum):
    """When a dropped connection happens, relative to the server's own work."""

    BEFORE = "before"  # nothing was stored: a plain network failure
    AFTER = "after"  # the upload was stored but the client never learns its ids


class FaultKnobs(BaseModel):
    """Every fault knob, changeable at runtime by `POST /_standin/faults`.

    Index delay, index-fail share and retention live here too: slow and
    failing indexing, and images that expire, are what a drill turns on and
    off while the server runs. They apply to images uploaded after the change
    (each image keeps the values it was uploaded under: an image's expiry is
    fixed when it arrives, as its indexing is).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fail_share: _Share = Field(default=0.0, description="Share of /v1 requests answered 500.")
    drop_share: _Share = Field(
        default=0.0, description="Share of /v1 requests whose connection is dropped."
    )
    drop_when: DropWhen = Field(
        default=DropWhen.AFTER,
        description="Drop before doing the work, or after it (upload stored, ids lost).",
    )
    latency: float = Field(default=0.0, ge=0.0, description="Seconds added to each /v1 request.")
    latency_jitter: float = Field(
        default=0.0, ge=0.0, description="Up to this many extra seconds, uniformly random."
    )
    burst_429_share: _Share = Field(
        default=0.0, description="Chance that a /v1 request starts a burst of 429s."
    )
    burst_429_length: int = Field(default=1, ge=1, description="Consecutive 429s in one burst.")
    burst_429_retry_after: int = Field(
        default=1, ge=0, description="retry-after (seconds) sent during a burst."
    )
    index_delay: float = Field(
        default=0.0, ge=0.0, description="Seconds an image stays at status 1 before 2 (or 3)."
    )
    index_fail_share: _Share = Field(
        default=0.0, description="Share of indexed images that end at status 3."
    )
    retention: float = Field(
        default=0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Seconds an image is kept after its upload, then gone; 0 = kept for ever.",
    )


class StandinConfig(BaseSettings):
    """How the stand-in server runs. Environment prefix `STANDIN_`."""

    model_config = SettingsConfigDict(env_prefix="STANDIN_", extra="ignore", frozen=True)

    host: str = Field(default=c.STANDIN_DEFAULT_HOST)
    port: int = Field(default=c.STANDIN_DEFAULT_PORT, ge=0, le=65535)
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=f"Accepted keys, comma-separated in the env; none: {c.STANDIN_DEV_API_KEY!r}.",
    )

    upload_quota: int = Field(
        default=0, ge=0, description="Upload requests per key per window; 0 = unlimited."
    )
    search_quota: int = Field(
        default=0, ge=0, description="Search requests per key per window; 0 = unlimited."
    )
    quota_window: float = Field(
        default=float(c.RATE_LIMIT_WINDOW_SECONDS), gt=0, description="Rolling window, seconds."
    )

    max_images_per_request: int = Field(default=c.MAX_IMAGES_PER_REQUEST, ge=1)
    max_image_bytes: int = Field(default=c.MAX_IMAGE_BYTES, ge=1)
    max_request_bytes: int = Field(default=c.MAX_REQUEST_BYTES, ge=1)

    # URL uploads (`image_urls`): each fetched image is at most `max_image_bytes`, and
    # all of one request together at most `max_request_bytes`, as for file parts.
    fetch_timeout: float = Field(
        default=FETCH_TIMEOUT_DEFAULT,
        gt=0,
        allow_inf_nan=False,
        description="Seconds one image URL may take, whole (connect, redirects, body).",
    )
    fetch_max_redirects: int = Field(
        default=FETCH_MAX_REDIRECTS_DEFAULT, ge=0, description="Redirects followed per image URL."
    )
    fetch_concurrency: int = Field(
        default=FETCH_CONCURRENCY_DEFAULT,
        ge=1,
        description="Image URLs of one request fetched at once.",
    )

    storage_dir: Path | None = Field(
        default=None, description="Keep images in this folder; unset: in memory."
    )
    seed: int | None = Field(default=None, description="Seed of the fault RNG; unset: random.")
    access_log: bool = Field(default=False, description="uvicorn's access log (costs throughput).")

    # Fault knobs: the start values of FaultKnobs.
    fail_share: _Share = 0.0
    drop_share: _Share = 0.0
    drop_when: DropWhen = DropWhen.AFTER
    latency: float = Field(default=0.0, ge=0.0)
    latency_jitter: float = Field(default=0.0, ge=0.0)
    burst_429_share: _Share = 0.0
    burst_429_length: int = Field(default=1, ge=1)
    burst_429_retry_after: int = Field(default=1, ge=0)
    index_delay: float = Field(default=0.0, ge=0.0)
    index_fail_share: _Share = 0.0
    # Reka's developer tier deletes an image 30 days after its upload (shared/reka-api.md).
    retention: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @property
    def accepted_keys(self) -> frozenset[str]:
        """The keys the server takes; the dev key when none were configured."""
        return frozenset(self.api_keys) if self.api_keys else frozenset({c.STANDIN_DEV_API_KEY})

    def fault_knobs(self) -> FaultKnobs:
        """A fresh, mutable copy of the fault knobs this server starts with."""
        return FaultKnobs(**{name: getattr(self, name) for name in FaultKnobs.model_fields})
