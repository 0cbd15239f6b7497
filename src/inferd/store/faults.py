"""Storage faults: a write the database could not make because of its storage (disk full,
read-only, I/O error), told apart from bad input and from a lost connection, and counted so
that readiness can say "writes are failing" while reads still work.

``storage_fault(exc)`` names the fault behind an error (``full``, ``read_only``, ``io``) on
each supported database and for files inferd writes itself. ``WriteHealth`` listens to an
engine's events: a transaction that wrote and committed is a success, a storage fault on any
statement or commit is a failure; ``ok`` is false after ``threshold`` failures in a row and true
again at the next success.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, ExceptionContext

FULL, READ_ONLY, IO = "full", "read_only", "io"

MESSAGES = {
    FULL: "The server's storage is full: nothing can be stored until space is freed.",
    READ_ONLY: "The server's storage is read-only: nothing can be stored right now.",
    IO: "The server's storage failed to write (an I/O error).",
}

# PostgreSQL SQLSTATEs (class 53: insufficient resources; 25006; 58030)
_PG = {"53100": FULL, "53000": FULL, "25006": READ_ONLY, "58030": IO}
# MySQL/MariaDB error numbers: disk full, table full, --read-only, read-only transaction,
# table opened read-only, error writing file
_MYSQL = {1021: FULL, 1114: FULL, 1290: READ_ONLY, 1792: READ_ONLY, 1036: READ_ONLY, 3: IO}
_OS = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EROFS: READ_ONLY, errno.EIO: IO}


def _sqlite(exc: sqlite3.Error) -> str | None:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        return FULL
    if name.startswith("SQLITE_READONLY"):
        return READ_ONLY
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        return IO
    return None


def _one(exc: BaseException) -> str | None:
    if isinstance(exc, sqlite3.Error):
        return _sqlite(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _PG.get(sqlstate)
    if isinstance(exc, OSError) and exc.errno is not None:
        return _OS.get(exc.errno)
    if type(exc).__module__.startswith("pymysql") and exc.args \
            and isinstance(exc.args[0], int):
        return _MYSQL.get(exc.args[0])
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (drivers' errors are wrapped a few times)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) and orig is not seen else (
            seen.__cause__ or seen.__context__)
    return chain


def storage_fault(exc: BaseException) -> str | None:
    """``full``, ``read_only`` or ``io`` when ``exc`` (or what it wraps) is a storage fault."""
    for seen in _chain(exc):
        fault = _one(seen)
        if fault is not None:
            return fault
    return None


def bad_value(exc: BaseException) -> bool:
    """Whether the database refused a value (too long, out of range, not valid text): the
    request's data, not the storage. PostgreSQL's data exceptions (SQLSTATE class 22) reach
    SQLAlchemy through asyncpg as plain ``DBAPIError``s, hence the SQLSTATE."""
    if storage_fault(exc) is not None:
        return False
    return isinstance(exc, sa_exc.DataError) or any(
        str(getattr(seen, "sqlstate", "") or "").startswith("22") for seen in _chain(exc))


# keys of a pooled connection's ``info`` dict
_WROTE, _COMMITTED, _FAILED = "inferd.wrote", "inferd.committed", "inferd.failed"
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class WriteHealth:
    """Storage faults on writes in a row; reset by the next committed write."""

    def __init__(self, threshold: int = 3) -> None:
        self.threshold = threshold
        self.failures = 0
        self.last_fault: str | None = None
        self._sqlite = False

    @property
    def ok(self) -> bool:
        return self.failures < self.threshold

    def failed(self, fault: str) -> None:
        self.failures += 1
        self.last_fault = fault

    def succeeded(self) -> None:
        self.failures = 0
        self.last_fault = None

    def watch(self, engine: Engine) -> None:
        """Follow every transaction of ``engine`` (the sync engine of an async one)."""
        self._sqlite = engine.dialect.name == "sqlite"
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        event.listen(engine, "handle_error", self._error)
        event.listen(engine, "checkin", self._checkin)

    def _executed(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:7].upper().startswith(_WRITES):
            conn.info[_WROTE] = True

    def _commit(self, conn: Any) -> None:
        if not conn.invalidated and conn.info.pop(_WROTE, False):
            conn.info[_COMMITTED] = True

    def _rollback(self, conn: Any) -> None:
        if not conn.invalidated:  # an invalidated connection has no info left
            conn.info.pop(_WROTE, None)

    def _error(self, context: ExceptionContext) -> None:
        fault = storage_fault(context.original_exception)
        if fault is None:
            return
        self.failed(fault)
        if context.connection is not None and not context.connection.invalidated:
            context.connection.info[_FAILED] = True
        if fault == READ_ONLY and self._sqlite:
            # SQLite opens a file it cannot write read-only and keeps it so; and a connection
            # opened while such a one is open cannot write either. Drop this connection and
            # mark the pooled ones stale (and close each as it comes back: ``_checkin``), so
            # that once the storage is writable a connection opens with none of them left.
            context.is_disconnect = True

    def _checkin(self, _dbapi_connection: Any, record: Any) -> None:
        if record is None:
            return
        info = record.info
        committed = info.pop(_COMMITTED, False)
        failed = info.pop(_FAILED, False)
        info.pop(_WROTE, None)
        if committed and not failed:
            self.succeeded()
        elif self._sqlite and self.last_fault == READ_ONLY:
            record.invalidate()
