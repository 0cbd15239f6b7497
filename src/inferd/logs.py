"""Structured logs: one JSON object per line, carrying the id of the request being served.

The auth middleware puts the request id (the one returned in ``X-Request-ID``) into
``request_id_var``; every log record made while that request runs, in any module, carries it.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("inferd_request_id", default=None)
# The job a worker is running (unset outside jobs): engines that hand work to another system
# derive their task ids from it, so a job run again finds its earlier task.
job_id_var: ContextVar[str | None] = ContextVar("inferd_job_id", default=None)
# Its deadline (epoch seconds), if it has one: such an engine waits no longer than that.
job_deadline_var: ContextVar[float | None] = ContextVar("inferd_job_deadline", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message",
                                                                               "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra, "exc"}``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            data["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = request_id_var.get()
        return f"{text} request_id={request_id}" if request_id else text


def configure(level: str = "info", fmt: str = "json") -> None:
    """Send all logs (inferd's, uvicorn's, libraries') to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # aiosqlite logs every statement with its parameters (replica URLs, credentials) at debug
    logging.getLogger("aiosqlite").setLevel(max(root.level, logging.INFO))


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn ``log_config`` that leaves the handlers ``configure`` installed in place."""
    return {"version": 1, "disable_existing_loggers": False}
