"""Typed settings, parsed once at start.

Two groups, two prefixes: `REKA_*` describes the API (base URL, key, timeouts)
and `INGEST_*` the service itself. `load_settings()` turns any bad value into a
`SettingsError` whose message names the environment variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reka_ingest.core import constants as c
from reka_ingest.core.errors import SettingsError
from reka_ingest.core.globs import check_globs
from reka_ingest.core.path_pattern import PathPattern
from reka_ingest.core.zones import parse_zone

if TYPE_CHECKING:
    import httpx


class RekaSettings(BaseSettings):
    """How to reach the Reka Vision API. Environment prefix `REKA_`."""

    # No setting is ever infinite or NaN: `inf` seconds is not a timeout, and a NaN
    # compares false with everything (a lease that never ends, a deadline never met).
    model_config = SettingsConfigDict(
        env_prefix="REKA_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    api_key: SecretStr | None = Field(
        default=None,
        description="API key. Unset: `reka-ingest run` starts the stand-in server instead.",
    )
    api_base_url: str = Field(
        default=c.DEFAULT_API_BASE_URL, description="Base URL of the Vision API."
    )
    api_path_prefix: str = Field(
        default=c.DEFAULT_API_PATH_PREFIX,
        description="Path prefix of the image endpoints (`/v1`; empty for older deployments).",
    )
    connect_timeout: float = Field(
        default=c.DEFAULT_CONNECT_TIMEOUT,
        gt=0,
        description="Seconds to open a connection to the API.",
    )
    read_timeout: float = Field(
        default=c.DEFAULT_READ_TIMEOUT,
        gt=0,
        description="Seconds to wait for the API's answer (an upload of a full batch included).",
    )
    write_timeout: float = Field(
        default=c.DEFAULT_WRITE_TIMEOUT,
        gt=0,
        description="Seconds to send one chunk of a request body.",
    )
    pool_timeout: float = Field(
        default=c.DEFAULT_POOL_TIMEOUT,
        gt=0,
        description="Seconds to wait for a free pooled connection.",
    )
    max_connections: int = Field(
        default=c.DEFAULT_MAX_CONNECTIONS,
        ge=1,
        description="Most open connections per worker process.",
    )
    max_keepalive: int = Field(
        default=c.DEFAULT_MAX_KEEPALIVE,
        ge=0,
        description="Idle connections kept open per worker process.",
    )

    @field_validator("api_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("api_path_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("must be empty or start with '/'")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    # httpx is imported by the two methods that build its objects (for the API
    # client), not with the settings every command loads.
    def timeout(self) -> httpx.Timeout:
        import httpx  # noqa: PLC0415 - see above

        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.write_timeout,
            pool=self.pool_timeout,
        )

    def limits(self) -> httpx.Limits:
        import httpx  # noqa: PLC0415 - see timeout()

        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive,
        )


class ObserverKind(StrEnum):
    NATIVE = "native"  # inotify / FSEvents / ReadDirectoryChangesW
    POLLING = "polling"  # for network shares, where native events do not arrive


class AfterUpload(StrEnum):
    MOVE = "move"  # into done/
    KEEP = "keep"  # leave in the work area
    DELETE = "delete"


class PathMismatch(StrEnum):
    """What a file whose folders do not fit INGEST_PATH_METADATA gets."""

    FAIL = "fail"  # the file fails alone with `path_mismatch`
    OMIT = "omit"  # the file goes up without the folder-derived keys


class LogFormat(StrEnum):
    AUTO = "auto"  # readable on a terminal, JSON otherwise
    JSON = "json"
    CONSOLE = "console"


class IngestSettings(BaseSettings):
    """The service's own settings. Environment prefix `INGEST_`."""

    model_config = SettingsConfigDict(
        env_prefix="INGEST_", extra="ignore", frozen=True, allow_inf_nan=False
    )  # no setting infinite or NaN, as RekaSettings

    data_dir: Path = Field(default=Path("./var"), description="Ledger, Redis data, work area.")
    inbox: Path = Field(default=Path("./inbox"), description="The watched folder.")
    done_dir: Path | None = Field(
        default=None, description="Where uploaded files go. Unset: DATA_DIR/done."
    )
    failed_dir: Path | None = Field(
        default=None,
        description="Where failed files and their NAME.error.json go. Unset: DATA_DIR/failed.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the ledger (a password may be in it). Unset: SQLite at"
            " DATA_DIR/ledger.db."
        ),
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Broker URL (a password may be in it). Unset: the bundled redis-server.",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(
        default=LogFormat.AUTO,
        description="auto (readable on a terminal, JSON otherwise), json or console.",
    )

    # Batching (scheduler).
    batch_max_files: int = Field(
        default=c.MAX_IMAGES_PER_REQUEST,
        ge=1,
        le=c.MAX_IMAGES_PER_REQUEST,
        description=(
            "Most images in one upload request (the API takes at most 100; the daily quota"
            " counts requests, so fuller requests move more images a day)."
        ),
    )
    batch_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Most bytes of images in one upload request."
    )
    batch_max_wait: float = Field(default=2.0, ge=0, description="Seconds to wait to fill a batch.")

    # Taking files (scheduler).
    observer: ObserverKind = Field(
        default=ObserverKind.NATIVE,
        description="native (inotify and friends) or polling (network shares).",
    )
    polling_interval: float = Field(
        default=1.0, gt=0, description="Seconds between directory polls (polling observer)."
    )
    stable_interval: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between size and mtime checks of a file being written.",
    )
    min_file_age: float = Field(
        default=1.0, ge=0, description="Seconds a file must be unchanged before it is taken."
    )
    scan_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between full scans of the inbox (events can be missed).",
    )
    never_stable_after: float = Field(
        default=c.DEFAULT_NEVER_STABLE_AFTER,
        gt=0,
        description=(
            "Seconds a file may keep changing after it was first seen; then it fails with"
            " `never_stable`."
        ),
    )
    orphan_sidecar_after: float = Field(
        default=c.DEFAULT_ORPHAN_SIDECAR_AFTER,
        gt=0,
        description=(
            "Seconds a sidecar may wait for its image (checked at each scan); then it fails"
            " alone with `orphan_sidecar`."
        ),
    )
    sidecar_wait: float = Field(
        default=c.DEFAULT_SIDECAR_WAIT,
        ge=0,
        description=(
            "Seconds an image waits, after it last changed, for its sidecar to appear"
            " beside it (many writers save the image first); 0 takes images at once."
            " A sidecar that comes after its image was taken fails with `late_sidecar`."
        ),
    )
    max_image_bytes: int = Field(
        default=c.MAX_IMAGE_BYTES,
        ge=1,
        description="Largest image uploaded; larger files fail with `too_large`.",
    )
    include: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Globs of the paths taken (relative to the inbox or the scanned root; rclone's"
            " rules: `*` within a folder, `**` across folders, a leading `/` anchors at the"
            " root); a JSON list or comma-separated. Unset: every file. A file it leaves out"
            " stays in place, is never claimed and is counted as `excluded`."
        ),
    )
    exclude: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Globs of the paths left in place (as INGEST_INCLUDE; an exclude wins over an"
            " include), counted as `excluded` in `status`."
        ),
    )

    # Metadata (scheduler). Precedence, key by key: sidecar > `_defaults.json` > path > EXIF.
    path_metadata: str | None = Field(
        default=None,
        description=(
            "Metadata from the folders a file sits in: a pattern of folder segments, each"
            " `{key}` (the folder's name becomes that key's value), `*` (any one folder), a"
            " name the folder must have, or a final `**` (any depth), e.g."
            " `{site_id}/{camera_id}/*`. Unset: none."
        ),
    )
    path_metadata_mismatch: PathMismatch = Field(
        default=PathMismatch.FAIL,
        description=(
            "A file whose folders do not fit INGEST_PATH_METADATA: fail (alone, with"
            " `path_mismatch`) or omit (sent without the folder-derived keys)."
        ),
    )
    exif_timezone: str = Field(
        default="UTC",
        description=(
            "Zone of EXIF capture times that carry no offset (`OffsetTimeOriginal`): an IANA"
            " name (`Europe/Oslo`) or a fixed offset (`+02:00`). Used for"
            " `recorded_timestamp_utc` when no sidecar or default sets it."
        ),
    )
    convert_quality: int = Field(
        default=90,
        ge=1,
        le=95,
        description=(
            "JPEG quality of HEIC/HEIF and AVIF images converted before upload (the API"
            " does not take those formats; the original bytes are kept and hashed)."
        ),
    )

    # Uploading (worker).
    after_upload: AfterUpload = Field(
        default=AfterUpload.MOVE,
        description="What happens to an uploaded file: move (to DONE_DIR), keep, or delete.",
    )
    allow_reupload: bool = Field(
        default=False, description="Upload bytes already uploaded once instead of `duplicate`."
    )
    upload_max_retries: int = Field(
        default=8,
        ge=0,
        description="Retries of a batch after passing errors, before its files fail.",
    )
    retry_backoff_base: float = Field(
        default=1.0, gt=0, description="Seconds before the first retry; doubles each time."
    )
    retry_backoff_max: float = Field(
        default=60.0, gt=0, description="Longest wait between retries, seconds."
    )
    worker_concurrency: int = Field(
        default=2,
        ge=1,
        description=(
            "Upload requests in flight per worker (it runs"
            f" {c.WORKER_PROCESSES_PER_SLOT} processes per request, so one's checks and"
            " records overlap another's request, plus"
            f" {c.WORKER_CONTROL_PROCESSES} for the indexing poll and sweeps)."
        ),
    )
    uploads_per_day: int = Field(
        default=c.STANDARD_TIER_UPLOADS_PER_DAY,
        ge=0,
        description=(
            "Upload requests per rolling 24 hours, shared by every worker (the standard"
            " tier's 100); 0 = unlimited."
        ),
    )
    uploads_per_second: int = Field(
        default=0,
        ge=0,
        description="Upload requests per second, shared by every worker; 0 = no such limit.",
    )
    bundled_redis_port: int = Field(
        default=6390, ge=1, le=65535, description="Port of the bundled redis-server on 127.0.0.1."
    )
    standin_port: int = Field(
        default=c.STANDIN_RUN_PORT,
        ge=1,
        le=65535,
        description=(
            "Port on 127.0.0.1 of the stand-in Reka server `reka-ingest run` starts without"
            " REKA_API_KEY; its images are kept in DATA_DIR/standin, so image URLs survive"
            " restarts."
        ),
    )
    batch_lease: float = Field(
        default=600.0, gt=0, description="Seconds a worker may hold a batch before it is retaken."
    )
    ledger_retry_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description=(
            "Seconds a worker keeps trying to record an upload the API accepted while the"
            " ledger cannot be reached (never past the batch's lease); then the outcome is"
            " parked in Redis and recorded by beat's next sweep, never sent again."
        ),
    )
    sweep_interval: float = Field(
        default=5.0, gt=0, description="Seconds between beat sweeps for due and stuck batches."
    )
    requeue_after: float = Field(
        default=600.0, gt=0, description="Seconds a queued batch may wait before it is sent again."
    )
    visibility_timeout: int = Field(
        default=3600, ge=60, description="Seconds before Redis redelivers an unacked task."
    )

    # Indexing poller (beat + worker).
    poll_sweep_interval: float = Field(
        default=3.0, gt=0, description="Seconds between beat's indexing poll sweeps."
    )
    poll_initial_delay: float = Field(
        default=2.0,
        gt=0,
        description="Seconds from upload to the first indexing poll; doubles each time.",
    )
    poll_max_delay: float = Field(
        default=60.0, gt=0, description="Longest wait between indexing polls, seconds."
    )
    poll_concurrency: int = Field(
        default=8, ge=1, description="Get Image calls in flight at once in one sweep."
    )
    index_deadline: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds after upload until a file still indexing fails (`indexing_timeout`).",
    )

    # The periodic server check (beat + worker).
    server_check_interval: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Seconds between beat's read-only server checks (`reka-ingest check`: orphans,"
            " missing images, status drift, possible duplicates), whose findings reach the"
            " metrics and `status`; 0 = off."
        ),
    )

    # `reka-ingest check` and `reka-ingest delete`: List, Get and Delete Image and image URLs.
    check_requests_per_second: float = Field(
        default=10.0,
        gt=0,
        le=1000,
        description=(
            "Requests per second `reka-ingest check` and `delete` send to the API (List,"
            " Get and Delete Image, image URLs): they have no published quota, so be gentle."
        ),
    )

    # Notifications (beat detects, a worker posts).
    notify_url: SecretStr | None = Field(
        default=None,
        description=(
            "Webhook (http or https) that receives a JSON POST for each event: a folder's"
            " drop settled, failures past INGEST_NOTIFY_FAILURES, the daily quota used up"
            " and refilled. Treated as a secret (a token may be in it); never logged in"
            " full. Unset: no notifications, at no cost."
        ),
    )
    notify_failures: int = Field(
        default=10,
        ge=0,
        description=(
            "Failed files within INGEST_NOTIFY_WINDOW that send a `failures_threshold` event"
            " (at most one per window); 0 = never."
        ),
    )
    notify_window: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Seconds the failures are counted over, and the least time between two"
            " `failures_threshold` events (or a `quota_refilled` and the next"
            " `quota_exhausted`)."
        ),
    )
    notify_settle_after: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Seconds a folder must be quiet (no file seen or finished) with every file"
            " final before its `drop_settled` event: files trickling in join the drop."
        ),
    )
    notify_timeout: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description=(
            "Seconds each step of one webhook POST may take (connecting, sending, waiting"
            " for the answer); a POST that runs out is tried again later."
        ),
    )
    notify_deployment: str | None = Field(
        default=None,
        description=(
            "The name of this deployment in every event (`deployment`). Unset: the"
            " absolute path of INGEST_DATA_DIR."
        ),
    )

    # Flower.
    flower_host: str = Field(
        default="127.0.0.1",
        description="Flower's address; anything but loopback needs FLOWER_BASIC_AUTH.",
    )
    flower_port: int = Field(default=5555, ge=1, le=65535, description="Flower's port.")
    flower_basic_auth: SecretStr | None = Field(
        default=None, description="user:password for Flower."
    )

    # The web page (`reka-ingest web`).
    web_host: str = Field(
        default="127.0.0.1",
        description="The web page's address; anything but loopback needs INGEST_WEB_BASIC_AUTH.",
    )
    web_port: int = Field(
        default=c.DEFAULT_WEB_PORT, ge=1, le=65535, description="The web page's port."
    )
    web_basic_auth: SecretStr | None = Field(
        default=None,
        description=(
            "user:password for the web page; when set, every request needs it. Unset: only"
            " loopback clients are answered."
        ),
    )

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _split_globs(cls, value: object) -> object:
        """A JSON list, or globs separated by commas (a comma inside `{...}` is the glob's)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        globs, depth, start = [], 0, 0
        for i, ch in enumerate(text):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if ch == "," and depth <= 0:
                globs.append(text[start:i])
                start = i + 1
        globs.append(text[start:])
        return [g.strip() for g in globs if g.strip()]

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        parts = urlsplit(url)
        if parts.scheme == "unix" and parts.path:
            return SecretStr(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be a redis://, rediss:// or unix:// URL with a host or path")
        return SecretStr(url)

    @field_validator("web_basic_auth", "flower_basic_auth")
    @classmethod
    def _check_web_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        user, colon, password = value.get_secret_value().partition(":")
        if not (user and colon and password):
            raise ValueError("must be user:password, both parts non-empty")
        return value

    @field_validator("notify_url")
    @classmethod
    def _check_notify_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("include", "exclude")
    @classmethod
    def _check_globs(cls, value: list[str]) -> list[str]:
        check_globs(value)  # GlobError (a ValueError) naming the glob and what is wrong
        return value

    @field_validator("path_metadata")
    @classmethod
    def _check_path_pattern(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # set but empty: no folder metadata, as when unset
        PathPattern.parse(value)  # ValueError naming the segment and what is wrong
        return value

    @field_validator("exif_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        parse_zone(value)  # ValueError naming what is wrong
        return value

    @property
    def work_dir(self) -> Path:
        """Claimed files wait here; must share a filesystem with the inbox (atomic rename)."""
        return self.data_dir / "work"

    @property
    def done_path(self) -> Path:
        return self.done_dir if self.done_dir is not None else self.data_dir / "done"

    @property
    def failed_path(self) -> Path:
        return self.failed_dir if self.failed_dir is not None else self.data_dir / "failed"

    @property
    def broker_url(self) -> str:
        """INGEST_REDIS_URL, or the bundled redis-server that `reka-ingest run` starts."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return f"redis://127.0.0.1:{self.bundled_redis_port}/0"

    @property
    def ledger_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'ledger.db').resolve()}"


@dataclass(frozen=True, slots=True)
class Settings:
    reka: RekaSettings
    ingest: IngestSettings


_PREFIXES: dict[type[BaseSettings], str] = {RekaSettings: "REKA_", IngestSettings: "INGEST_"}


def _secret_fields(*groups: type[BaseSettings]) -> frozenset[str]:
    """The fields typed `SecretStr` (or `SecretStr | None`): never echoed in an error."""
    return frozenset(
        name
        for group in groups
        for name, info in group.model_fields.items()
        if info.annotation is not None
        and SecretStr in (info.annotation, *get_args(info.annotation))
    )


_SECRET_FIELDS = _secret_fields(RekaSettings, IngestSettings)
# Secrets that are URLs whose path and query may hold a token (webhooks).
_WEBHOOK_FIELDS = {"notify_url"}


def _explain(cls: type[BaseSettings], err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        var = f"{_PREFIXES[cls]}{field.upper()}"
        shown = "" if field in _SECRET_FIELDS else f" (got {item.get('input')!r})"
        lines.append(f"{var}: {item['msg']}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate every setting from the environment.

    `overrides` (field names of either group) win over the environment; tests
    and commands use them. A bad value raises `SettingsError` naming the variable.
    """
    reka_over = {k: v for k, v in overrides.items() if k in RekaSettings.model_fields}
    ingest_over = {k: v for k, v in overrides.items() if k in IngestSettings.model_fields}
    unknown = set(overrides) - set(reka_over) - set(ingest_over)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    try:
        reka = RekaSettings(**reka_over)
    except ValidationError as err:
        raise SettingsError(_explain(RekaSettings, err)) from None
    try:
        ingest = IngestSettings(**ingest_over)
    except ValidationError as err:
        raise SettingsError(_explain(IngestSettings, err)) from None
    return Settings(reka=reka, ingest=ingest)


def mask_url(url: str) -> str:
    """`redis://:secret@host/0` -> `redis://:***@host/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def mask_webhook(url: str) -> str:
    """A webhook URL as it may be shown: scheme, host, port and first path segment.

    `https://user:tok@hooks.example.com/services/T0/B0/xyz?token=abc` ->
    `https://***@hooks.example.com/services/***?***`: a token may sit in the
    user part, the path (Slack-style) or the query, so none of them is shown.
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    user = "***@" if parts.username is not None or parts.password is not None else ""
    segments = [seg for seg in parts.path.split("/") if seg]
    path = ""
    if segments:
        path = "/" + segments[0] + ("/***" if len(segments) > 1 else "")
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{user}{host}{port}{path}{query}"


def effective(settings: Settings) -> dict[str, dict[str, object]]:
    """Every setting by environment variable, secrets masked, for `reka-ingest config`."""
    out: dict[str, dict[str, object]] = {}
    for group in (settings.reka, settings.ingest):
        prefix = _PREFIXES[type(group)]
        rows: dict[str, object] = {}
        for name in type(group).model_fields:
            value = getattr(group, name)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if name in _WEBHOOK_FIELDS:
                    shown: object = mask_webhook(secret)
                else:
                    shown = mask_url(secret) if "://" in secret else "***"
            elif isinstance(value, Path):
                shown = str(value)
            elif isinstance(value, StrEnum):
                shown = value.value
            else:
                shown = value
            rows[f"{prefix}{name.upper()}"] = shown
        out[prefix.rstrip("_")] = rows
    return out
