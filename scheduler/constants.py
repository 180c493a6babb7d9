"""The scheduler's own named defaults: names it ignores, bounds it keeps, sizes
it works in. Settings a user tunes live in `reka_ingest.core.settings`; these are the
limits a user should never need to touch."""

from __future__ import annotations

from typing import Final

# --- Names --------------------------------------------------------------------

# (A sidecar's suffix is `reka_ingest.files.sidecars.SIDECAR_SUFFIX`.)
DEFAULTS_NAME: Final = "_defaults.json"
# Partial downloads, editor backups and temp files: never taken while so named.
TEMP_SUFFIXES: Final = (".tmp", ".part", ".crdownload", "~")

# --- Taking files ---------------------------------------------------------------

# How long a file may keep changing (INGEST_NEVER_STABLE_AFTER) and a sidecar
# may wait for its image (INGEST_ORPHAN_SIDECAR_AFTER) are settings.
# A sidecar or `_defaults.json` larger than this is refused, not read.
MAX_SIDECAR_BYTES: Final = 1024 * 1024
# JSON nested deeper than this (arrays and objects) is refused before it is parsed:
# Python's parser recurses, and 100,000 levels would raise RecursionError.
MAX_SIDECAR_DEPTH: Final = 32
# Claim folders are `work/<inbox tag>-<random>[.<encoded relative folder>]`;
# the folder part is left out when it would make the name longer than this.
MAX_CLAIM_NAME: Final = 240
INBOX_TAG_CHARS: Final = 10
# Claims per claim folder before the watcher opens another (a folder stays small
# enough to list), and open folders kept (one per relative folder, least recent
# forgotten first).
CLAIM_FOLDER_FILES: Final = 1000
MAX_OPEN_CLAIM_FOLDERS: Final = 256

# --- The processing loop ----------------------------------------------------------

# Files recorded per ledger transaction (one `record_files` call).
RECORD_GROUP_SIZE: Final = 500
# The longest the processing thread sleeps waiting for events between ticks.
MAX_TICK_SECONDS: Final = 0.25
# The longest pause after ticks that keep failing (the ledger down): the pause
# doubles from MAX_TICK_SECONDS up to this, so an outage is retried, not spun on.
MAX_FAILED_TICK_PAUSE: Final = 30.0
# Events drained from the handler's queue per tick before other work gets a turn.
MAX_EVENTS_PER_TICK: Final = 50_000
# Stability checks done per tick before events and batches get a turn.
MAX_CHECKS_PER_TICK: Final = 5_000
# After the kernel dropped events (inotify queue overflow), scan at once, but
# not more often than this while a burst keeps overflowing it.
OVERFLOW_SCAN_MIN_GAP: Final = 2.0
# How long `stop()` waits for the processing thread to finish its group.
STOP_TIMEOUT_SECONDS: Final = 30.0
# Unbatched rows read per query at recovery.
RECOVERY_QUERY_LIMIT: Final = 10_000
# At start, a worker's settled row whose bytes are still in work/ is moved only
# once it has been left alone this long (a live worker moves its files within
# milliseconds of recording them); the watcher's own rows are moved at once.
RECOVERY_MOVE_GRACE: Final = 60.0
