"""SCIM provisioning on SQLite, PostgreSQL and MariaDB: filters compare as SCIM says (userName
and displayName without case, externalId exactly), pages count the total, external ids are
unique, a user made inactive is refused on another gateway's ring reading the key feed, and a
deprovisioned user who holds keys leaves SCIM (and its groups) but keeps its row. The
migration adds and drops its columns."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from inferd.auth.admin import KeyAdmin, KeySpec
from inferd.auth.keys import KeyRing
from inferd.auth.scim import GROUP, PATCH_OP, USER, ScimError, ScimService, parse_filter
from inferd.auth.teams import TeamAdmin
from inferd.errors import AuthenticationFailed
from inferd.store.db import Database, downgrade, upgrade
from inferd.store.keys import KeyStore
from inferd.store.scim import ScimStore
from inferd.store.teams import TeamStore

BASE = "https://inferd.test/scim/v2"


def _service(database: Database) -> tuple[ScimService, KeyAdmin, KeyRing]:
    ring = KeyRing(KeyStore(database))
    teams = TeamAdmin(TeamStore(database), ring)
    return ScimService(teams, ScimStore(database)), KeyAdmin(KeyStore(database), ring), ring


async def _user(scim: ScimService, name: str, **attrs: object) -> dict[str, object]:
    return await scim.create_user({"schemas": [USER], "userName": name, **attrs}, BASE)


async def test_filters_pages_and_uniqueness(database: Database) -> None:
    scim, _, _ = _service(database)
    made = [await _user(scim, f"Person-{i}", externalId=f"Ext-{i}", displayName=f"P {i}")
            for i in range(5)]
    ids = [u["id"] for u in made]

    async def found(text: str) -> list[object]:
        page = await scim.list_users(BASE, parse_filter(text, "User"), 1, 100)
        return [u["id"] for u in page["Resources"]]

    assert await found('userName eq "person-2"') == [ids[2]]
    assert await found('displayName eq "p 3"') == [ids[3]]
    assert await found('externalId eq "Ext-4"') == [ids[4]]
    assert await found('externalId eq "ext-4"') == []  # externalId is case-exact
    assert await found(f'id eq "{ids[1]}"') == [ids[1]]
    assert await found('id eq "not-a-number"') == []
    page = await scim.list_users(BASE, None, 2, 2)
    assert [u["id"] for u in page["Resources"]] == ids[1:3]
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
    assert (await scim.list_users(BASE, None, 1, 0))["Resources"] == []
    for duplicate in ({"userName": "PERSON-0"}, {"userName": "new", "externalId": "Ext-0"}):
        with pytest.raises(ScimError) as refused:
            await scim.create_user({"schemas": [USER], **duplicate}, BASE)
        assert (refused.value.status, refused.value.scim_type) == (409, "uniqueness")
    group = await scim.create_group({"schemas": [GROUP], "displayName": "Team A",
                                     "externalId": "g-1",
                                     "members": [{"value": ids[0]}, {"value": ids[1]}]}, BASE)
    with pytest.raises(ScimError) as refused:
        await scim.create_group({"schemas": [GROUP], "displayName": "team a"}, BASE)
    assert refused.value.scim_type == "uniqueness"
    groups = await scim.list_groups(BASE, parse_filter('displayName eq "TEAM A"', "Group"),
                                    1, 10)
    assert [g["id"] for g in groups["Resources"]] == [group["id"]]
    assert [m["value"] for m in groups["Resources"][0]["members"]] == ids[:2]


async def test_deactivation_reaches_another_ring_and_deprovisioning_keeps_keyed_rows(
        database: Database) -> None:
    scim, keys, ring = _service(database)
    await ring.reload()
    ann = await _user(scim, "ann", active=True)
    group = await scim.create_group({"schemas": [GROUP], "displayName": "ops",
                                     "members": [{"value": ann["id"]}]}, BASE)
    key = await keys.create(KeySpec(name="ann", user_id=int(ann["id"]),
                                    team_id=int(group["id"])))
    other = KeyRing(KeyStore(database))  # another gateway, reading the key feed
    await other.reload()
    assert (await other.authenticate_fresh(key["key"])).user_id == int(ann["id"])
    off = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active",
                                                  "value": False}]}
    assert (await scim.patch_user(str(ann["id"]), off, BASE))["active"] is False
    with pytest.raises(AuthenticationFailed) as refused:
        await ring.authenticate_fresh(key["key"])
    assert refused.value.code == "user_disabled"
    await other.refresh()
    with pytest.raises(AuthenticationFailed):
        await other.authenticate_fresh(key["key"])
    await scim.delete_user(str(ann["id"]))
    with pytest.raises(ScimError) as missing:
        await scim.get_user(str(ann["id"]), BASE)
    assert missing.value.status == 404
    assert (await scim.get_group(str(group["id"]), BASE))["members"] == []
    assert (await scim.list_users(BASE, None, 1, 10))["totalResults"] == 0
    row = await scim.teams.get_user(int(ann["id"]))  # kept (its key refers to it), disabled
    assert row["disabled"] is True
    # a user without keys is deleted
    bob = await _user(scim, "bob")
    await scim.delete_user(str(bob["id"]))
    assert await TeamStore(database).user(int(bob["id"])) is None


async def test_the_migration_adds_and_drops_its_columns(database: Database) -> None:
    async def columns() -> dict[str, set[str]]:
        async with database.engine.connect() as conn:
            return await conn.run_sync(lambda c: {
                table: {col["name"] for col in sa.inspect(c).get_columns(table)}
                for table in ("users", "teams")})

    added = {"users": {"external_id", "display_name", "scim", "deprovisioned_at"},
             "teams": {"external_id"}}
    found = await columns()
    assert all(added[t] <= found[t] for t in added)
    await asyncio.to_thread(downgrade, database.url, "0025")
    found = await columns()
    assert not any(added[t] & found[t] for t in added)
    await asyncio.to_thread(upgrade, database.url)
    found = await columns()
    assert all(added[t] <= found[t] for t in added)
