"""Identifiers, secrets and timestamps of the objects inferd shows: made one way here."""

from __future__ import annotations

import base64
import secrets
import time
from typing import overload

# Random bits in every id: ids of jobs, files, batches and pictures are the only thing that
# names them in a URL, so they must not be guessable (ownership is checked too).
ID_RANDOM_BYTES = 16


def new_id(prefix: str, sep: str = "_") -> str:
    """``job_18eaa0df2bb6b5c9`` + 32 hex digits: a time-ordered id (sorting ids sorts by
    creation, which pagination by ``after`` relies on) that cannot be guessed (128 random
    bits after the nanosecond clock). OpenAI's response ids use ``-`` (``chatcmpl-...``)."""
    return f"{prefix}{sep}{time.time_ns():016x}{secrets.token_hex(ID_RANDOM_BYTES)}"


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
