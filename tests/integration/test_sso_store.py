"""Single sign-on's users, group rules and keys on SQLite, PostgreSQL and MariaDB: a signed-in
subject's user (by issuer and subject), the memberships and role the rules give at each login,
the user's keys moved along, and the principal an access token of theirs gets (the provider's
side of the flow runs in tests/e2e/test_sso.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from inferd.audit import AuditLog
from inferd.auth.oidc import OidcClient
from inferd.auth.service import Auth
from inferd.auth.sso import API_KEY, SESSION_KEY, Sso, SsoRules
from inferd.auth.teams import TeamSpec
from inferd.errors import AuthenticationFailed
from inferd.settings import Settings
from inferd.store.audit import AuditStore
from inferd.store.db import Database
from inferd.store.sso import SsoStore

ISSUER = "https://id.example.org"
ADMIN_KEY = "sk-admin-of-the-sso-store-tests-0123456789"


@pytest.fixture
async def sso(database: Database) -> AsyncIterator[Sso]:
    settings = Settings(key_refresh_seconds=3600, admin_key=ADMIN_KEY, oidc_issuer=ISSUER,
                        oidc_client_id="inferd")
    audit = AuditLog(AuditStore(database))
    auth = await Auth.start(settings.access, database, cluster=settings.cluster,
                            host=settings.http.host, audit=audit)
    async with httpx.AsyncClient() as http:
        yield await Sso.start(settings.sso, database, auth, audit,
                              OidcClient(settings.sso, http))
    await auth.close()
    await audit.flush()


async def _keys(sso: Sso, user_id: int) -> list[dict[str, object]]:
    return await SsoStore(sso.store.db).keys_named(user_id, (SESSION_KEY, API_KEY))


async def test_the_rules_give_memberships_and_roles_at_each_login(sso: Sso) -> None:
    teams = sso.auth.teams
    ml = (await teams.create_team(TeamSpec(name="ml")))["id"]
    ops = (await teams.create_team(TeamSpec(name="ops")))["id"]
    await sso.set_rules(SsoRules.model_validate({"rules": [
        {"group": "ml", "team": "ml"}, {"group": "ops", "team": "ops", "role": "owner"},
        {"group": "watchers", "team": "ml", "role": "viewer"},
        {"group": "admins", "installation_role": "admin"}]}))
    claims = {"iss": ISSUER, "sub": "u-1", "preferred_username": "dana",
              "email": "dana@example.org", "groups": ["ml", "ops", "admins"]}
    first = await sso.sign_in(claims)
    assert first.user == "dana"
    user = await sso.store.user_by_identity(ISSUER, "u-1")
    assert user is not None and user["role"] == "admin" and user["email"] == "dana@example.org"
    assert await sso.store.memberships(user["id"]) == {ml: "member", ops: "owner"}
    keys = await _keys(sso, user["id"])
    assert sorted(k["name"] for k in keys) == [API_KEY, SESSION_KEY]
    assert {(k["team_id"], k["scope"]) for k in keys} == {(ml, "admin")}
    session = sso.handoff(first.cookie)["key"]
    assert (await sso.auth.principal(session)).is_admin

    # the groups changed at the provider: ops and admin gone, ml only watched
    await sso.sign_in({**claims, "groups": ["watchers"]})
    user = await sso.store.user_by_identity(ISSUER, "u-1")
    assert user is not None and user["role"] is None
    assert await sso.store.memberships(user["id"]) == {ml: "viewer"}
    keys = await _keys(sso, user["id"])
    assert {(k["team_id"], k["scope"]) for k in keys} == {(None, "user")}
    assert not (await sso.auth.principal(session)).is_admin
    # the same subject is the same user; another one with a taken name gets its own
    other = await sso.sign_in({**claims, "sub": "u-2", "groups": []})
    assert other.user == "dana (u-2)"


async def test_a_user_the_provider_provisioned_over_scim_is_the_one_signing_in(sso: Sso) -> None:
    """The provider's SCIM client made the user before their first login: the login is that
    user's (not a second user beside it), so deprovisioning it over SCIM ends the access the
    login gives. A local user of the same name is never taken over."""
    teams = sso.auth.teams
    provisioned = await teams.create_user_values({"name": "erin@example.org",
                                           "email": "erin@example.org",
                                           "external_id": "idp-erin"})
    await teams.create_user_values({"name": "frank@example.org"})  # made locally, not provisioned
    claims = {"iss": ISSUER, "sub": "u-erin", "preferred_username": "erin@example.org",
              "email": "Erin@Example.org", "groups": []}
    login = await sso.sign_in(claims)
    assert login.user == "erin@example.org"
    user = await sso.store.user_by_identity(ISSUER, "u-erin")
    assert user is not None and user["id"] == provisioned["id"]
    session = sso.handoff(login.cookie)["key"]
    assert (await sso.auth.principal(session)).key_id is not None
    # deprovisioned (SCIM's active: false): the session the login gave is refused at once
    await teams.update_user_values(int(provisioned["id"]), {"disabled": True})
    with pytest.raises(AuthenticationFailed):
        await sso.auth.principal(session)

    other = await sso.sign_in({**claims, "sub": "u-frank",
                               "preferred_username": "frank@example.org", "email": None})
    assert other.user == "frank@example.org (u-frank)"
