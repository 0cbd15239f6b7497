"""URLs as inferd shows and logs them: without the secrets they may carry.

Replica URLs sometimes carry a credential (``?token=...``, ``user:pass@host``); every place
that displays or logs a URL shows ``redact_url(url)`` instead, which keeps what tells replicas
apart (scheme, host, port, path, parameter names) and replaces each parameter value (a
parameter without a name whole), the user information and the fragment with ``***``.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its user information and query values masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
        query = "&".join(f"{p.split('=', 1)[0]}={MASK}" if "=" in p else MASK
                         for p in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query,
                           MASK if parts.fragment else ""))
    except ValueError:  # not parseable as a URL: show nothing of it
        return MASK
