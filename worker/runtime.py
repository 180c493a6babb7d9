"""The resources one worker process shares between tasks: settings, the
ledger, one HTTP client and the shared API budget (a Redis connection). Built
lazily, once per process id, so a Celery prefork child never reuses its
parent's connections."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.reka.client import RekaClient, reset_shared_client, shared_client
from worker.budget import Budget


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    clock: Callable[[], float] = time.time
    client_factory: Callable[[Settings], RekaClient] | None = None
    _client: RekaClient | None = field(default=None, repr=False)
    _budget: Budget | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def client(self) -> RekaClient:
        """The process's one client (`shared_client`), unless a test supplied a factory."""
        if self.client_factory is None:
            return shared_client(self.settings.reka)
        with self._lock:
            if self._client is None:
                self._client = self.client_factory(self.settings)
            return self._client

    @property
    def budget(self) -> Budget:
        """The shared upload budget (Redis at the broker URL), read with this runtime's clock."""
        with self._lock:
            if self._budget is None:
                self._budget = Budget.from_settings(self.settings, clock=self.clock)
            return self._budget

    def close(self) -> None:
        if self._budget is not None:
            self._budget.close()
            self._budget = None
        if self._client is not None:
            self._client.close()
            self._client = None
        else:
            reset_shared_client()
        self.ledger.dispose()


_current: tuple[int, Runtime] | None = None
_current_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _current  # noqa: PLW0603 - one runtime per process is the point
    with _current_lock:
        if _current is None or _current[0] != os.getpid():
            settings = load_settings()
            _current = (os.getpid(), Runtime(settings, open_ledger(settings.ingest.ledger_url)))
        return _current[1]


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime for this process (tests, or a process that built its own)."""
    global _current  # noqa: PLW0603 - see get_runtime
    with _current_lock:
        _current = (os.getpid(), runtime) if runtime is not None else None
