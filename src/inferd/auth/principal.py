"""Who is calling: the principal a request is made on behalf of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["admin", "user"]


@dataclass(frozen=True)
class Principal:
    """The caller of a request, resolved from its API key (or anonymous when keys are off)."""

    key_id: str | None
    scope: Scope
    allowed_models: frozenset[str] | None = None  # None: every model
    # Secret for signing this key's webhooks (Standard Webhooks, HMAC-SHA256).
    webhook_secret: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


# Used when inferd runs without keys (loopback only).
ANONYMOUS = Principal(key_id=None, scope="admin")
