"""``Owners``: a job runs as its owner's key as it is now, as the open-mode principal only when
it was made in open mode, and never as an admin by default."""

from __future__ import annotations

import dataclasses

import pytest

from inferd.auth.principal import OPEN_MODE, Principal
from inferd.errors import AuthenticationFailed
from inferd.jobs.owners import Owners
from inferd.store.jobs import JobRecord

OPEN = dataclasses.replace(OPEN_MODE, storage_bytes=1000)  # as ``Auth`` makes it


def job(owner: str | None, scope: str = "user") -> JobRecord:
    return JobRecord(id="job_1", endpoint="/v1/chat/completions", model="echo", request={},
                     request_hash="h", owner=owner, owner_scope=scope)


async def test_a_job_made_in_open_mode_runs_as_the_open_mode_principal() -> None:
    owners = Owners(None, OPEN)
    assert await owners.of(job(None, "admin")) is OPEN
    assert await owners.webhook_secret(job(None, "admin")) is None


async def test_a_job_without_a_key_not_made_in_open_mode_fails() -> None:
    with pytest.raises(AuthenticationFailed) as refused:
        await Owners(None, OPEN).of(job(None, "user"))
    assert refused.value.status == 401


async def test_a_key_that_is_gone_fails_its_job_whatever_its_stored_scope() -> None:
    async def revoked(_key_id: str) -> Principal:
        raise AuthenticationFailed("gone", code="key_revoked")

    async def unknown(_key_id: str) -> Principal | None:
        return None

    seen = Principal(key_id="5", scope="admin", webhook_secret="whsec_x")
    for lookup in (revoked, unknown):
        owners = Owners(lookup, OPEN)
        owners.remember(seen)
        with pytest.raises(AuthenticationFailed) as refused:
            await owners.of(job("5", "admin"))
        assert refused.value.code == "key_revoked"
        # its webhook is still signed with the secret seen at submit
        assert await owners.webhook_secret(job("5", "admin")) == "whsec_x"
    # without a key ring, only a key this process saw submit runs; another fails
    owners = Owners(None, OPEN)
    owners.remember(seen)
    assert await owners.of(job("5", "admin")) is seen
    with pytest.raises(AuthenticationFailed):
        await owners.of(job("6", "admin"))


async def test_a_valid_key_runs_as_it_is_now() -> None:
    now = Principal(key_id="5", scope="user", rpm=3, webhook_secret="whsec_new")

    async def lookup(key_id: str) -> Principal:
        assert key_id == "5"
        return now

    owners = Owners(lookup, OPEN)
    owners.remember(Principal(key_id="5", scope="user", webhook_secret="whsec_old"))
    assert await owners.of(job("5")) is now
    assert await owners.webhook_secret(job("5")) == "whsec_new"


def test_the_open_mode_principal_must_be_the_open_mode_one() -> None:
    with pytest.raises(ValueError):
        Owners(None, Principal(key_id=None, scope="admin"))
