"""The ledger: one SQL row per file from the moment it is seen until its outcome.

The ledger is the truth; Redis is only transport. SQLite in WAL mode by
default, any SQLAlchemy URL (PostgreSQL when many machines share the work).
"""

from reka_ingest.ledger.db import Ledger, open_ledger, open_ledger_waiting

__all__ = ["Ledger", "open_ledger", "open_ledger_waiting"]
