"""Every default, header name and protocol constant, named once.

Other modules import from here instead of repeating a literal; a change of a
default is a change of one line.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

# --- The Reka Vision API ----------------------------------------------------

DEFAULT_API_BASE_URL: Final = "https://vision-agent.api.reka.ai"
DEFAULT_API_PATH_PREFIX: Final = "/v1"

API_KEY_HEADER: Final = "X-Api-Key"
REQUEST_ID_HEADER: Final = "X-Request-ID"
OVERWRITE_METERING_HEADER: Final = "X-Enable-Overwrite-Metering"

RATELIMIT_LIMIT_HEADER: Final = "x-ratelimit-requests-limit"
RATELIMIT_REMAINING_HEADER: Final = "x-ratelimit-requests-remaining"
RATELIMIT_RESET_HEADER: Final = "x-ratelimit-requests-reset"
RETRY_AFTER_HEADER: Final = "retry-after"

# Documented per-key limit on the standard tier, requests per rolling 24 hours.
STANDARD_TIER_UPLOADS_PER_DAY: Final = 100
RATE_LIMIT_WINDOW_SECONDS: Final = 24 * 60 * 60

# Not documented by Reka; the stand-in's assumed limits (see shared/reka-api.md).
MAX_IMAGES_PER_REQUEST: Final = 100
MAX_IMAGE_BYTES: Final = 20 * 1024 * 1024
MAX_REQUEST_BYTES: Final = 512 * 1024 * 1024

# --- Taking files ------------------------------------------------------------

# A file still changing this long after it was first seen is recorded failed
# (`never_stable`): a writer that never finishes must not hold the watcher's
# memory, nor hide behind a path that is "almost" ready.
DEFAULT_NEVER_STABLE_AFTER: Final = 3600.0
# A sidecar whose image has not arrived this long after it was first seen is
# recorded failed on its own (`orphan_sidecar`) and moved to failed/.
DEFAULT_ORPHAN_SIDECAR_AFTER: Final = 300.0
# How long an image waits for a sidecar written after it (INGEST_SIDECAR_WAIT): a
# camera or script that saves the image, then its metadata, needs a few seconds.
DEFAULT_SIDECAR_WAIT: Final = 5.0
# Streamed hashing (`reka_ingest.files.hashing`): bytes read per call.
HASH_CHUNK_BYTES: Final = 1024 * 1024

LIST_LIMIT_DEFAULT: Final = 20
LIST_LIMIT_MAX: Final = 100
SEARCH_MAX_RESULTS_DEFAULT: Final = 10


class IndexingStatus(IntEnum):
    """`indexing_status` values. Reka documents 1 and 2; 0 and 3 are the
    stand-in's assumption (shared/reka-api.md), kept here and nowhere else."""

    NOT_INDEXED = 0  # uploaded with index: false (assumed)
    IN_PROGRESS = 1  # documented
    INDEXED = 2  # documented
    FAILED = 3  # assumed


# Error envelope `type` values, from Reka's errors page.
class ErrorType:
    VALIDATION: Final = "validation_error"
    AUTHENTICATION: Final = "authentication_error"
    NOT_FOUND: Final = "not_found_error"
    RATE_LIMIT: Final = "rate_limit_error"
    SERVER: Final = "server_error"


RATE_LIMIT_CODE: Final = "rate_limit_exceeded"

# Image content types the API takes, by the format Pillow (or our sniffer) names.
CONTENT_TYPES: Final[dict[str, str]] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}

# --- The shared API budget, in Redis (worker.budget) ---------------------------

# Every budget key starts here. The bare prefix is the published summary hash
# (`remaining`, `limit`, `reset_at`) the workers write and the metrics
# collector, `status` and `status --watch` read.
BUDGET_KEY: Final = "reka_ingest:budget"
# Per API key, by its fingerprint (`fp`, never the key): a sorted set with one
# member per request in the window, and the epoch seconds the server asked every
# worker to wait until.
BUDGET_WINDOW_KEY: Final = BUDGET_KEY + ":{fp}:window"
BUDGET_PAUSE_KEY: Final = BUDGET_KEY + ":{fp}:paused_until"
# The published hash also names the rule the workers count by (`fp`, `limit`: upload
# requests per window, 0 = no daily limit; `per_second`; `window` seconds), so every
# view reads the budget from Redis alone (reka_ingest.metrics.budget), whatever
# settings its own shell has.
# The deployment marker `reka-ingest run` writes into the Redis it uses (a hash:
# data_dir, pid, started_at): a command reading a Redis without it, or with another
# data folder's, warns that it may be reading someone else's server.
DEPLOYMENT_KEY: Final = "reka_ingest:deployment"
# Hex digits of an API key's SHA-256 that name it in keys and logs.
API_KEY_FINGERPRINT_CHARS: Final = 12
# Seconds a Redis call on the upload path may take: an upload must not hang on it.
REDIS_TIMEOUT: Final = 2.0
# Seconds a batch waits when Redis cannot be reached to count it.
REDIS_DOWN_WAIT: Final = 30.0
# Seconds every worker pauses after a 429 that named no time.
RATE_LIMITED_PAUSE: Final = 1.0
# Seconds a budget key outlives what it records (then Redis drops it).
BUDGET_KEY_TTL_MARGIN: Final = 60
# Processes a worker runs per upload request it keeps in flight (INGEST_WORKER_CONCURRENCY
# requests, `worker.slots`): while one process checks, records and moves its batch,
# another's request is in flight, so a slow API is kept busy at that concurrency.
WORKER_PROCESSES_PER_SLOT: Final = 2
# Processes beside those for beat's control tasks that may run at once with the uploads
# (a poll sweep and a batch sweep, or a notification's post), so a sweep never takes
# one of the processes around the requests.
WORKER_CONTROL_PROCESSES: Final = 2

# --- Indexing polls (worker.poller) ----------------------------------------------

# A sweep that dies leaves the rows it took to the next sweep after this long.
POLL_LEASE_SECONDS: Final = 120.0
# Rows taken per claim.
POLL_BATCH_LIMIT: Final = 500
# Claims per sweep while they come back full, and the share of the sweep
# interval after which no new claim starts: a sweep keeps up with uploads, yet
# ends before the next one starts beside it and takes the worker's other
# upload process.
POLL_ROUNDS_PER_SWEEP: Final = 10
POLL_SWEEP_SHARE: Final = 0.5
# Failed files settled per sweep: a backlog (an outage that failed thousands)
# clears over a few sweeps instead of making one long.
SETTLE_LIMIT: Final = 500

# --- The ledger -----------------------------------------------------------------

# How long SQLite waits for another connection's write lock before it gives up.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# The PostgreSQL advisory lock held while migrations run, so that processes
# starting together migrate one at a time (any number no other lock uses).
MIGRATION_LOCK_KEY: Final = 727274

# --- HTTP client defaults ------------------------------------------------------

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_READ_TIMEOUT: Final = 120.0  # a batch of 100 large images takes a while to index-ack
DEFAULT_WRITE_TIMEOUT: Final = 120.0
DEFAULT_POOL_TIMEOUT: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 20
DEFAULT_MAX_KEEPALIVE: Final = 10
UPLOAD_CHUNK_BYTES: Final = 256 * 1024

# --- The stand-in server ------------------------------------------------------

STANDIN_DEV_API_KEY: Final = "dev-key"
STANDIN_DEFAULT_HOST: Final = "127.0.0.1"
STANDIN_DEFAULT_PORT: Final = 8700
# The port of the stand-in `reka-ingest run` starts (INGEST_STANDIN_PORT): fixed, so
# the image URLs in the ledger still answer after a restart.
STANDIN_RUN_PORT: Final = 8765
# The web page's port (`reka-ingest web`, INGEST_WEB_PORT): beside Flower's 5555 and the
# stand-in's 8765 under `run`.
DEFAULT_WEB_PORT: Final = 8766

# --- Notifications (worker.notify) ----------------------------------------------

# Every notification marker in Redis starts here. Markers only say what was already
# announced; the events themselves are derived from the ledger and the budget.
NOTIFY_KEY: Final = "reka_ingest:notify"
# Per folder (`h`: a hash of its root and name, never the name itself): the highest
# file id of the last drop announced as settled. A string with a TTL, refreshed by
# each announcement (NOTIFY_DROP_HORIZON + a day).
NOTIFY_DROP_KEY: Final = NOTIFY_KEY + ":drop:{h}"
# Epoch seconds up to which folders' finished files have been looked at.
NOTIFY_DROPS_THROUGH_KEY: Final = NOTIFY_KEY + ":drops_through"
# Set (NX, expiring after INGEST_NOTIFY_WINDOW) when a failures event is sent.
NOTIFY_FAILURES_KEY: Final = NOTIFY_KEY + ":failures"
# Hash: the quota state last announced (`state`: ok | exhausted) and since when (`at`).
NOTIFY_QUOTA_KEY: Final = NOTIFY_KEY + ":quota"
# A drop is the folder's files finished within this many seconds; older ones were
# announced before (or happened while notifications were off).
NOTIFY_DROP_HORIZON: Final = 7 * 24 * 60 * 60.0
# Seconds of finished files looked at again by each sweep: a row may be committed
# a little after its finish time, and machines' clocks differ a little.
NOTIFY_DROP_SLACK: Final = 120.0
# A pause the API asked for that lasts at least this long means its quota ran out
# (a shorter one is a burst limit).
NOTIFY_QUOTA_PAUSE_MIN: Final = 600.0
# Reasons, and example paths, in a failures event; the longest path shown.
NOTIFY_TOP_REASONS: Final = 5
NOTIFY_EXAMPLES: Final = 5
NOTIFY_PATH_CHARS: Final = 300
# Posting one event: retries after a 5xx, a 429 or no answer (backoff doubling from
# 1 s, at most NOTIFY_RETRY_BACKOFF_MAX, with jitter); then it is logged and dropped.
NOTIFY_MAX_RETRIES: Final = 6
NOTIFY_RETRY_BACKOFF_MAX: Final = 60
