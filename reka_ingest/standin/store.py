"""Where uploaded images live: in memory (default) or in a folder.

Both stores keep the records (id, metadata, hashes, timing) in an
insertion-ordered dict, which is what list pages walk. They differ in where
the bytes go. `FolderStore` also writes each record as JSON beside its bytes
and reads them back at start, so a stand-in restarted on the same folder
still knows its images.

Writing is split in two so a folder store can do its disk I/O off the event
loop: `write()` (bytes and sidecar; safe to call from a worker thread, touches
no shared dict) and `add()` (makes the record visible; call on the loop).
Removing is split the same way: `take()` (the record leaves every view at
once; on the loop) and `erase()` (the folder's files; from a worker thread).

An image uploaded under a retention carries `expires_at`; the store keeps
those in a heap, soonest first, and `expired(now)` takes every one whose time
has come, so an expiry costs O(log n) and nothing is scanned. Nothing runs in
the background: the app calls `expired()` before it serves each request
(`StandinState.expire`), so a test that moves its clock sees the images go on
its next request.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Protocol

_BLOB_SUFFIX: Final = ".bin"
_RECORD_SUFFIX: Final = ".json"
_SEQUENCE: Final = "sequence"
_RECORD: Final = "record"


@dataclass(slots=True)
class ImageRecord:
    """Everything the stand-in knows about one uploaded image.

    No hash here: `GET /_standin/images/{id}` computes the sha256 from the
    stored bytes when asked, so uploads do not pay for it.
    """

    image_id: str
    filename: str | None
    declared_content_type: str | None
    content_type: str  # sniffed from the bytes; what image_url serves
    size: int
    index: bool
    metadata: dict[str, Any]
    upload_timestamp: float
    ready_at: float  # when indexing ends (status leaves 1)
    fails: bool  # indexing ends at 3 instead of 2
    expires_at: float | None = None  # gone from then on; None: kept (and sidecars of old)
    source_url: str | None = None  # where a URL upload fetched the bytes; None: a file part


class Store(Protocol):
    """What the app needs from a store."""

    blocking_io: bool  # True: call write() from a worker thread

    def write(self, record: ImageRecord, data: bytes) -> None: ...
    def add(self, record: ImageRecord) -> None: ...
    def get(self, image_id: str) -> ImageRecord | None: ...
    def data(self, image_id: str) -> bytes | None: ...
    def take(self, image_id: str) -> bool: ...
    def erase(self, image_ids: Iterable[str]) -> None: ...
    def expired(self, now: float) -> list[str]: ...
    def page(self, offset: int, limit: int) -> list[ImageRecord]: ...
    def records(self) -> list[ImageRecord]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...


class MemoryStore:
    """Bytes and records in dicts; gone when the process ends."""

    blocking_io = False

    def __init__(self) -> None:
        self._records: dict[str, ImageRecord] = {}
        self._blobs: dict[str, bytes] = {}
        # (expires_at, image_id) of records that expire; may hold ids already removed.
        self._expiry: list[tuple[float, str]] = []

    def write(self, record: ImageRecord, data: bytes) -> None:
        self._blobs[record.image_id] = data

    def add(self, record: ImageRecord) -> None:
        self._records[record.image_id] = record
        if record.expires_at is not None:
            heapq.heappush(self._expiry, (record.expires_at, record.image_id))

    def get(self, image_id: str) -> ImageRecord | None:
        return self._records.get(image_id)

    def data(self, image_id: str) -> bytes | None:
        return self._blobs.get(image_id) if image_id in self._records else None

    def take(self, image_id: str) -> bool:
        """Out of every view (list, get, search, image URL); False if it was not there."""
        self._blobs.pop(image_id, None)
        return self._records.pop(image_id, None) is not None

    def erase(self, image_ids: Iterable[str]) -> None:
        """What `take` left behind outside the dicts: nothing, in memory."""

    def expired(self, now: float) -> list[str]:
        """Take every image whose `expires_at` has come (<= now); their ids, for `erase`."""
        gone = []
        while self._expiry and self._expiry[0][0] <= now:
            _, image_id = heapq.heappop(self._expiry)
            if self.take(image_id):  # a deleted image left its entry behind
                gone.append(image_id)
        return gone

    def page(self, offset: int, limit: int) -> list[ImageRecord]:
        return list(itertools.islice(self._records.values(), offset, offset + limit))

    def records(self) -> list[ImageRecord]:
        return list(self._records.values())

    def clear(self) -> None:
        self._records.clear()
        self._blobs.clear()
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._records)


class FolderStore(MemoryStore):
    """Bytes in `ID.bin`, the record in `ID.json`, in one folder; reloaded at start."""

    blocking_io = True

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Upload order survives a restart through a sequence number in each sidecar
        # (images of one request share a timestamp). next() on a count is atomic.
        self._sequence = itertools.count(self._load())

    def _load(self) -> int:
        """Read back every record whose bytes are present; the next sequence number."""
        found: list[tuple[int, ImageRecord]] = []
        for path in self.root.glob(f"*{_RECORD_SUFFIX}"):
            doc = json.loads(path.read_text(encoding="utf-8"))
            if path.with_suffix(_BLOB_SUFFIX).exists():
                found.append((doc[_SEQUENCE], ImageRecord(**doc[_RECORD])))
        found.sort(key=lambda pair: pair[0])
        for _, record in found:
            self.add(record)  # an expired one goes on the first request
        return found[-1][0] + 1 if found else 0

    def _blob(self, image_id: str) -> Path:
        return self.root / f"{image_id}{_BLOB_SUFFIX}"

    def write(self, record: ImageRecord, data: bytes) -> None:
        self._blob(record.image_id).write_bytes(data)
        sidecar = self.root / f"{record.image_id}{_RECORD_SUFFIX}"
        doc = {_SEQUENCE: next(self._sequence), _RECORD: asdict(record)}
        sidecar.write_text(json.dumps(doc), encoding="utf-8")

    def data(self, image_id: str) -> bytes | None:
        if image_id not in self._records:
            return None
        try:
            return self._blob(image_id).read_bytes()
        except FileNotFoundError:
            return None

    def erase(self, image_ids: Iterable[str]) -> None:
        """Unlink the bytes and the sidecar of each image (safe from a worker thread)."""
        for image_id in image_ids:
            for suffix in (_BLOB_SUFFIX, _RECORD_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    (self.root / f"{image_id}{suffix}").unlink()

    def clear(self) -> None:
        ids = list(self._records)
        super().clear()
        self.erase(ids)


def open_store(storage_dir: Path | None) -> Store:
    return FolderStore(storage_dir) if storage_dir is not None else MemoryStore()
