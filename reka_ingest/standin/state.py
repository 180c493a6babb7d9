"""All mutable state of one stand-in server, owned by its app instance.

Nothing here is module-global: two servers in one process (tests do this)
share nothing. Everything runs on the server's event loop, so no locks.

Images leave the store here: `expire()` (before every request: those whose
retention ran out) and `remove()` (one image, by Delete Image or the admin
expiry). Each takes the record out of every view on the loop at once, then
erases a folder store's files in a worker thread.

Handlers read `config` on every request, so an in-process test may swap it
(`state.config = state.config.model_copy(update=...)`) to change the size
limits. Keys, quotas and storage are built once, at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from reka_ingest.core.logs import get_logger
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.faults import FaultInjector
from reka_ingest.standin.quota import RollingQuota
from reka_ingest.standin.stats import Stats
from reka_ingest.standin.store import Store, open_store

log = get_logger(__name__)


@dataclass(slots=True)
class StandinState:
    config: StandinConfig
    clock: Callable[[], float]
    keys: frozenset[str]
    store: Store
    upload_quota: RollingQuota
    search_quota: RollingQuota
    faults: FaultInjector
    stats: Stats

    @classmethod
    def create(cls, config: StandinConfig, clock: Callable[[], float]) -> StandinState:
        return cls(
            config=config,
            clock=clock,
            keys=config.accepted_keys,
            store=open_store(config.storage_dir),
            upload_quota=RollingQuota(config.upload_quota, config.quota_window, clock),
            search_quota=RollingQuota(config.search_quota, config.quota_window, clock),
            faults=FaultInjector(config.fault_knobs(), config.seed),
            stats=Stats(),
        )

    async def expire(self) -> None:
        """Take out every image whose retention has run out by now."""
        gone = self.store.expired(self.clock())
        if gone:
            self.stats.images_expired += len(gone)
            log.info("standin_images_expired", images=len(gone))
            await self._erase(gone)

    async def remove(self, image_id: str, *, expired: bool) -> bool:
        """Forget one image (deleted, or `expired` as a retention would); False if unknown."""
        if not self.store.take(image_id):
            return False
        if expired:
            self.stats.images_expired += 1
        else:
            self.stats.images_deleted += 1
        await self._erase([image_id])
        return True

    async def _erase(self, image_ids: list[str]) -> None:
        if self.store.blocking_io:
            await asyncio.to_thread(self.store.erase, image_ids)
        else:
            self.store.erase(image_ids)

    def reset(self) -> None:
        """Forget images, counters and quota use; fault knobs back to the start values."""
        self.store.clear()
        self.upload_quota.clear()
        self.search_quota.clear()
        self.faults.reset(self.config.fault_knobs())
        self.stats = Stats()
