"""Who a job runs as: its submitter's key as it is now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from inferd.auth.principal import ANONYMOUS, Principal
from inferd.errors import AuthenticationFailed
from inferd.store.jobs import JobRecord

# The key with this id as it is now; raises ``AuthenticationFailed`` when it was revoked.
PrincipalLookup = Callable[[str], Awaitable[Principal | None]]


class Owners:
    """Resolves a job's owner through the key ring, else what this process saw at submit."""

    def __init__(self, lookup: PrincipalLookup | None = None) -> None:
        self.lookup = lookup
        self._seen: dict[str, Principal] = {}

    def remember(self, principal: Principal) -> None:
        if principal.key_id is not None:
            self._seen[principal.key_id] = principal

    async def of(self, job: JobRecord, strict: bool = False) -> Principal:
        """``strict`` (running the job) raises ``AuthenticationFailed`` when the key was
        revoked; otherwise (signing its webhook) the job's own record of its owner is used."""
        if job.owner is None:
            return ANONYMOUS
        if self.lookup is not None:
            try:
                found = await self.lookup(job.owner)
            except AuthenticationFailed:
                if strict:
                    raise
                found = None
            if found is not None:
                return found
        return self._seen.get(job.owner) or Principal(
            key_id=job.owner, scope="admin" if job.owner_scope == "admin" else "user")
