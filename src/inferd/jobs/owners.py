"""Who a job runs as: its submitter's key as it is now.

A job stores its owner's key id (``owner``) and scope (``owner_scope``). A job without an owner
key was made while keys were not required: only the open-mode caller (``OPEN_MODE``, an admin
without a key) submits work without a key id, so such a job runs as the open-mode principal
this process was given. A job whose key is no longer valid (deleted, disabled, expired), or no
longer known at all, fails with 401 ``key_revoked``: a job never runs as an admin by default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from inferd.auth.principal import Principal
from inferd.errors import AuthenticationFailed
from inferd.store.jobs import JobRecord

# The key with this id as it is now; raises ``AuthenticationFailed`` when it was revoked.
PrincipalLookup = Callable[[str], Awaitable[Principal | None]]


def owner_gone() -> AuthenticationFailed:
    return AuthenticationFailed("The API key that submitted this job is no longer valid.",
                                code="key_revoked")


class Owners:
    """Resolves a job's owner through the key ring (``lookup``), else through the keys this
    process saw submit work (a process without a key ring: the job system alone).

    ``open_mode`` is the principal of the jobs made while keys were not required.
    """

    def __init__(self, lookup: PrincipalLookup | None, open_mode: Principal) -> None:
        if not open_mode.open_mode:
            raise ValueError("open_mode must be the open-mode principal (OPEN_MODE)")
        self.lookup = lookup
        self.open_mode = open_mode
        self._seen: dict[str, Principal] = {}

    def remember(self, principal: Principal) -> None:
        if principal.key_id is not None:
            self._seen[principal.key_id] = principal

    async def of(self, job: JobRecord) -> Principal:
        """The principal ``job`` runs as; ``AuthenticationFailed`` (401 ``key_revoked``) when
        its key was revoked or is unknown, or when it has no key and was not made in open
        mode."""
        if job.owner is None:
            if job.owner_scope != "admin":  # only the open-mode caller has no key id
                raise AuthenticationFailed("This job has no owner key and was not made in open "
                                           "mode: it cannot run.", code="key_revoked")
            return self.open_mode
        if self.lookup is not None:
            found = await self.lookup(job.owner)  # raises when the key was revoked
            if found is not None:
                return found
            raise owner_gone()
        seen = self._seen.get(job.owner)
        if seen is None:
            raise owner_gone()
        return seen

    async def webhook_secret(self, job: JobRecord) -> str | None:
        """The secret signing ``job``'s webhook: its key's as it is now, else (the key was
        revoked since) as this process saw it at submit; None when neither is known."""
        if job.owner is None:
            return None
        if self.lookup is not None:
            try:
                found = await self.lookup(job.owner)
            except AuthenticationFailed:
                found = None
            if found is not None:
                return found.webhook_secret
        seen = self._seen.get(job.owner)
        return seen.webhook_secret if seen is not None else None
