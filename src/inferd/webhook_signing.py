"""Webhooks signed the Standard Webhooks way: what job webhooks and budget webhooks send.

Headers: ``webhook-id`` (the same for every retry of one notice), ``webhook-timestamp`` (epoch
seconds) and ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))
where ``key`` is the base64-decoded part of the ``whsec_...`` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from inferd.numerals import ascii_int

SECRET_PREFIX = "whsec_"


def valid_secret(secret: str) -> bool:
    """True for a ``whsec_`` secret whose key is base64 of at least 16 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= 16


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for ``body``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    """The headers of one attempt to deliver ``body`` (signed now)."""
    timestamp = int(time.time())
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """Check a received webhook (what a receiver does; used by the tests and the docs)."""
    msg_id = headers.get("webhook-id", "")
    timestamp = ascii_int(headers.get("webhook-timestamp", ""))
    if timestamp is None or abs(time.time() - timestamp) > tolerance:
        return False  # what was signed is the header as sent: ASCII digits only
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, s)
               for s in headers.get("webhook-signature", "").split())
