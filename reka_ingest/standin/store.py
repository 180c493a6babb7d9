"""Where uploaded images live: in memory (default) or in a folder.

Both stores keep the records (id, metadata, hashes, timing) in an
insertion-ordered dict, which is what list pages walk. They differ in where
the bytes go. `FolderStore` also writes each record as JSON beside its bytes
and reads them back at start, so a stand-in restarted on the same folder
still knows its images.

Writing is split in two so a folder store can do its disk I/O off the event
loop: `write()` (bytes and sidecar; safe to call from a worker thread, touches
no shared dict) and `add()` (makes the record visible; call on the loop).
"""

from __future__ import annotations

import contextlib
import itertools
import json
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


class Store(Protocol):
    """What the app needs from a store."""

    blocking_io: bool  # True: call write() from a worker thread

    def write(self, record: ImageRecord, data: bytes) -> None: ...
    def add(self, record: ImageRecord) -> None: ...
    def get(self, image_id: str) -> ImageRecord | None: ...
    def data(self, image_id: str) -> bytes | None: ...
    def delete(self, image_id: str) -> bool: ...
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

    def write(self, record: ImageRecord, data: bytes) -> None:
        self._blobs[record.image_id] = data

    def add(self, record: ImageRecord) -> None:
        self._records[record.image_id] = record

    def get(self, image_id: str) -> ImageRecord | None:
        return self._records.get(image_id)

    def data(self, image_id: str) -> bytes | None:
        return self._blobs.get(image_id) if image_id in self._records else None

    def delete(self, image_id: str) -> bool:
        self._blobs.pop(image_id, None)
        return self._records.pop(image_id, None) is not None

    def page(self, offset: int, limit: int) -> list[ImageRecord]:
        return list(itertools.islice(self._records.values(), offset, offset + limit))

    def records(self) -> list[ImageRecord]:
        return list(self._records.values())

    def clear(self) -> None:
        self._records.clear()
        self._blobs.clear()

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
            self._records[record.image_id] = record
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

    def delete(self, image_id: str) -> bool:
        found = self._records.pop(image_id, None) is not None
        for suffix in (_BLOB_SUFFIX, _RECORD_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                (self.root / f"{image_id}{suffix}").unlink()
        return found

    def clear(self) -> None:
        for image_id in list(self._records):
            self.delete(image_id)


def open_store(storage_dir: Path | None) -> Store:
    return FolderStore(storage_dir) if storage_dir is not None else MemoryStore()
