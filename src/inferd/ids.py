"""Identifiers, secrets and timestamps of the objects inferd shows: made one way here."""

from __future__ import annotations

import base64
import secrets
import time
from typing import overload


def new_id(prefix: str, sep: str = "_") -> str:
    """``job_18eaa0df2bb6b5c94eb70e8d``: a time-ordered id (sorting ids sorts by creation,
    which pagination by ``after`` relies on), 24 hex digits after the prefix. OpenAI's
    response ids use ``-`` (``chatcmpl-...``)."""
    return f"{prefix}{sep}{time.time_ns():016x}{secrets.token_hex(4)}"


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` plus base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@overload
def unix_seconds(value: float) -> int: ...


@overload
def unix_seconds(value: float | None) -> int | None: ...


def unix_seconds(value: float | None) -> int | None:
    """A stored epoch time as the API shows it: whole seconds (None stays None)."""
    return None if value is None else int(value)
