"""The resources one worker process shares between its tasks: settings, the
ledger, the Reka client, the shared API budget (a Redis connection) and the
metrics counters.

One `Runtime` per process. The worker app holds a `ProcessRuntime`, started
by the pool child's process-init signal (`worker.signals`) and read by every
task (`worker.tasks`); nothing here is a module global. The Runtime is made in
the process that uses it, so a Celery prefork child never reuses its parent's
connections: the HTTP client and the budget's Redis are made on first use, and
the ledger's engines forget inherited connections on their own
(`reka_ingest.ledger.db`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.metrics.counters import CounterSink
from reka_ingest.reka.client import RekaClient
from worker.budget import Budget
from worker.notify import Notifier
from worker.slots import RequestSlots, worker_folder


@dataclass
class Runtime:
    """What a task works with. `counters` None: nothing is counted (tests, scripts)."""

    settings: Settings
    ledger: Ledger
    clock: Callable[[], float] = time.time
    counters: CounterSink | None = None
    _client: RekaClient | None = field(default=None, repr=False)
    _budget: Budget | None = field(default=None, repr=False)
    _notifier: Notifier | None = field(default=None, repr=False)
    _slots: RequestSlots | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, settings: Settings | None = None) -> Runtime:
        """A worker process's runtime: the ledger opened, API responses counted in
        the broker's Redis. `settings` default to the environment's."""
        settings = settings or load_settings()
        return cls(
            settings,
            open_ledger(settings.ingest.ledger_url),
            counters=CounterSink.connect(settings.ingest.broker_url),
        )

    @property
    def client(self) -> RekaClient:
        """The runtime's one Reka client, each response reported to `counters`."""
        with self._lock:
            if self._client is None:
                observer = self.counters.on_response if self.counters is not None else None
                self._client = RekaClient.from_settings(self.settings.reka, on_response=observer)
            return self._client

    @property
    def budget(self) -> Budget:
        """The shared upload budget (Redis at the broker URL), read with this runtime's clock."""
        with self._lock:
            if self._budget is None:
                self._budget = Budget.from_settings(self.settings, clock=self.clock)
            return self._budget

    @property
    def slots(self) -> RequestSlots:
        """This worker's upload request slots (INGEST_WORKER_CONCURRENCY of them)."""
        with self._lock:
            if self._slots is None:
                self._slots = RequestSlots(worker_folder(), self.settings.ingest.worker_concurrency)
            return self._slots

    @property
    def notifier(self) -> Notifier | None:
        """The webhook's client (INGEST_NOTIFY_URL), made on first use; None when unset."""
        with self._lock:
            if self._notifier is None:
                self._notifier = Notifier.from_settings(self.settings)
            return self._notifier

    def close(self) -> None:
        """Close the clients, the Redis connections and the ledger's engine."""
        with self._lock:
            if self._notifier is not None:
                self._notifier.close()
                self._notifier = None
            if self._budget is not None:
                self._budget.close()
                self._budget = None
            if self._client is not None:
                self._client.close()
                self._client = None
            if self.counters is not None:
                self.counters.close()
        self.ledger.dispose()


class ProcessRuntime:
    """The one Runtime of the current process, made by `build`.

    `start()` builds it when the process starts; `get()` returns it, building
    it then if the start failed or never ran (a pool that sends no process-init
    signal). A forked child never gets its parent's runtime: it builds its own,
    and drops the inherited one without closing it (closing would shut
    connections the parent still uses).
    """

    def __init__(self, build: Callable[[], Runtime]) -> None:
        self._build = build
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def start(self) -> Runtime:
        """Build this process's runtime now (the process-init signal), unless it is built."""
        return self.get()

    def get(self) -> Runtime:
        """This process's runtime, built on first use."""
        with self._for_this_process():
            if self._runtime is None:
                self._runtime = self._build()
            return self._runtime

    def close(self) -> None:
        """Close this process's runtime, if it built one."""
        with self._for_this_process():
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()

    def _for_this_process(self) -> threading.Lock:
        """The lock, after forgetting what a parent process left (its runtime, its lock)."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self._lock = threading.Lock()  # the parent's may have been held at the fork
            self._runtime = None
        return self._lock
