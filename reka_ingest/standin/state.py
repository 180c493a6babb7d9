"""All mutable state of one stand-in server, owned by its app instance.

Nothing here is module-global: two servers in one process (tests do this)
share nothing. Everything runs on the server's event loop, so no locks.

Handlers read `config` on every request, so an in-process test may swap it
(`state.config = state.config.model_copy(update=...)`) to change the size
limits. Keys, quotas and storage are built once, at start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.faults import FaultInjector
from reka_ingest.standin.quota import RollingQuota
from reka_ingest.standin.stats import Stats
from reka_ingest.standin.store import Store, open_store


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

    def reset(self) -> None:
        """Forget images, counters and quota use; fault knobs back to the start values."""
        self.store.clear()
        self.upload_quota.clear()
        self.search_quota.clear()
        self.faults.reset(self.config.fault_knobs())
        self.stats = Stats()
