"""What a failure of the database or of a file inferd writes means for a caller, for the layers
above the store (the HTTP error handlers): the store's exception types, and its tests of an
exception (a storage fault: disk full, read-only, I/O error; a value the database refused; the
database unreachable). The classification itself lives with the store (``inferd.store.faults``,
``inferd.store.db``), which knows its drivers' exceptions."""

from __future__ import annotations

from inferd.store.db import STORE_ERRORS, unreachable
from inferd.store.faults import MESSAGES, bad_value, storage_fault

__all__ = ["MESSAGES", "STORE_ERRORS", "bad_value", "storage_fault", "unreachable"]
