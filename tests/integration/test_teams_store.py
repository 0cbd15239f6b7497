"""Teams, users and membership on SQLite, PostgreSQL and MariaDB: pages by cursor, the key
feed their changes write, the principal a key of a team and user gets, the rules that keep
keys consistent, and the migration of the keys' ``team`` and ``owner`` texts."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.auth.keys import KeyRing, principal_from_row
from inferd.auth.teams import MemberSpec, TeamAdmin, TeamSpec, TeamUpdate, UserSpec, UserUpdate
from inferd.errors import AuthenticationFailed, Conflict, NotFound
from inferd.store.db import Database, downgrade, upgrade
from inferd.store.keys import KeyStore
from inferd.store.tables_control import api_keys, team_members, teams, users
from inferd.store.teams import TeamStore


def _admins(database: Database) -> tuple[KeyAdmin, TeamAdmin, KeyRing]:
    ring = KeyRing(KeyStore(database))
    return KeyAdmin(KeyStore(database), ring), TeamAdmin(TeamStore(database), ring), ring


async def test_teams_and_users_page_by_cursor(database: Database) -> None:
    _, admin, _ = _admins(database)
    for name in ("red", "blue", "Green 50%", "grey"):
        await admin.create_team(TeamSpec(name=name))
    names, after = [], None
    while True:
        page = await admin.team_page(after=after, limit=3)
        names.append([t["name"] for t in page["data"]])
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert names == [["red", "blue", "Green 50%"], ["grey"]]
    assert [t["name"] for t in (await admin.team_page(search="GR"))["data"]] == [
        "Green 50%", "grey"]
    assert [t["name"] for t in (await admin.team_page(search="%"))["data"]] == ["Green 50%"]
    with pytest.raises(Conflict):
        await admin.create_team(TeamSpec(name="red"))
    ann = await admin.create_user(UserSpec(name="ann", email="ann@example.org", role="admin"))
    await admin.create_user(UserSpec(name="bob"))
    assert [u["name"] for u in (await admin.user_page(search="example"))["data"]] == ["ann"]
    assert ann["role"] == "admin" and ann["disabled"] is False
    with pytest.raises(NotFound):
        await admin.get_user(ann["id"] + 100)


async def test_key_of_team_and_user_gets_both_levels(database: Database) -> None:
    keys, admin, ring = _admins(database)
    await ring.reload()
    team = await admin.create_team(TeamSpec(name="search", models=["a", "b"], rpm=10,
                                            token_budget=1000, budget_period="day"))
    user = await admin.create_user(UserSpec(name="ann", tpm=500))
    with pytest.raises(Conflict) as refused:  # not a member yet
        await keys.create(KeySpec(team_id=team["id"], user_id=user["id"]))
    assert refused.value.code == "not_a_member"
    await admin.set_member(team["id"], user["id"], MemberSpec(role="viewer"))
    with pytest.raises(Conflict):  # viewers hold no keys of the team
        await keys.create(KeySpec(team_id=team["id"], user_id=user["id"]))
    await admin.set_member(team["id"], user["id"], MemberSpec(role="member"))
    made = await keys.create(KeySpec(name="k", team_id=team["id"], user_id=user["id"],
                                     models=["b", "c"], rpm=100))
    assert (made["team"], made["owner"]) == ("search", "ann")
    principal = await ring.authenticate_fresh(made["key"])
    assert principal.allowed_models == frozenset({"b"})  # the key's and the team's
    assert principal.rpm == 100
    assert [(lv.kind, lv.rpm, lv.tpm, lv.token_budget) for lv in principal.levels] == [
        ("user", None, 500, None), ("team", 10, None, 1000)]
    # a team change reaches the key through the feed (and at once here)
    await admin.update_team(team["id"], TeamUpdate(models=None, name="search2"))
    principal = await ring.authenticate_fresh(made["key"])
    assert principal.allowed_models == frozenset({"b", "c"})
    assert (await keys.get(made["id"]))["team"] == "search2"
    # a disabled user's key stops working, on this ring and on another reading the feed
    other = KeyRing(KeyStore(database))
    await other.reload()
    assert (await other.authenticate_fresh(made["key"])).key_id == str(made["id"])
    await admin.update_user(user["id"], UserUpdate(disabled=True))
    with pytest.raises(AuthenticationFailed) as failed:
        ring.authenticate(made["key"])
    assert failed.value.code == "user_disabled"
    assert await other.refresh()
    with pytest.raises(AuthenticationFailed):
        await other.authenticate_fresh(made["key"])
    await admin.update_user(user["id"], UserUpdate(disabled=False))
    assert (await ring.authenticate_fresh(made["key"])).key_id == str(made["id"])
    # what still has keys is not deleted nor left
    for attempt in (admin.delete_team(team["id"]), admin.delete_user(user["id"]),
                    admin.remove_member(team["id"], user["id"])):
        with pytest.raises(Conflict):
            await attempt
    members = await admin.members(team["id"])
    assert [(m["name"], m["role"]) for m in members["data"]] == [("ann", "member")]
    await keys.delete(made["id"])
    await admin.remove_member(team["id"], user["id"])
    await admin.delete_team(team["id"])
    await admin.delete_user(user["id"])
    with pytest.raises(NotFound):
        await admin.get_team(team["id"])


async def test_a_user_role_caps_the_scope_and_an_admin_remains(database: Database) -> None:
    keys, admin, ring = _admins(database)
    await ring.reload()
    boss = await admin.create_user(UserSpec(name="boss", role="admin"))
    plain = await admin.create_user(UserSpec(name="plain"))
    with pytest.raises(Conflict) as refused:
        await keys.create(KeySpec(scope="admin", user_id=plain["id"]))
    assert refused.value.code == "role_too_low"
    key = await keys.create(KeySpec(scope="admin", user_id=boss["id"]))
    assert (await ring.authenticate_fresh(key["key"])).is_admin
    # the last usable admin key is the boss's: neither disabling the boss nor demoting them
    with pytest.raises(Conflict):
        await admin.update_user(boss["id"], UserUpdate(disabled=True))
    with pytest.raises(Conflict):
        await admin.update_user(boss["id"], UserUpdate(role=None))
    await keys.create(KeySpec(scope="admin"))  # another admin key: now the boss may go
    await admin.update_user(boss["id"], UserUpdate(role="auditor"))
    assert not (await ring.authenticate_fresh(key["key"])).is_admin  # capped: a user key
    with pytest.raises(Conflict):
        await keys.update(key["id"], KeyUpdate(user_id=plain["id"]))


async def test_migration_makes_teams_and_users_of_the_key_texts(database: Database) -> None:
    await asyncio.to_thread(downgrade, database.url, "0018")
    old = sa.table("api_keys", *(sa.column(c) for c in (
        "name", "owner", "team", "key_hash", "prefix", "scope", "webhook_secret",
        "created_at", "updated_at", "rpm")))
    rows = [("a", "ann", "red", 5), ("b", "ann", "blue", None), ("c", "bob", "red", None),
            ("d", None, "red", None), ("e", None, None, None), ("f", "ops", None, None),
            ("g", "eve", None, None)]
    scopes = {"f": "admin", "g": "auditor"}
    async with database.engine.begin() as conn:
        await conn.execute(old.insert(), [
            {"name": n, "owner": o, "team": t, "key_hash": f"h{n}", "prefix": "p",
             "scope": scopes.get(n, "user"), "webhook_secret": "", "created_at": 1.0,
             "updated_at": 1.0, "rpm": r} for n, o, t, r in rows])
    await asyncio.to_thread(upgrade, database.url)
    async with database.engine.connect() as conn:
        team_ids = dict((await conn.execute(sa.select(teams.c.name, teams.c.id))).all())
        user_ids = dict((await conn.execute(sa.select(users.c.name, users.c.id))).all())
        roles = dict((await conn.execute(sa.select(users.c.name, users.c.role))).all())
        linked = (await conn.execute(sa.select(api_keys.c.name, api_keys.c.team_id,
                                               api_keys.c.user_id, api_keys.c.team,
                                               api_keys.c.owner, api_keys.c.rpm)
                                     .order_by(api_keys.c.name))).all()
        members = set((await conn.execute(sa.select(team_members.c.team_id,
                                                    team_members.c.user_id,
                                                    team_members.c.role))).all())
    assert set(team_ids) == {"red", "blue"}
    assert roles == {"ann": None, "bob": None, "ops": "admin", "eve": "auditor"}
    red, blue, ann, bob = team_ids["red"], team_ids["blue"], user_ids["ann"], user_ids["bob"]
    assert [tuple(r) for r in linked] == [
        ("a", red, ann, "red", "ann", 5), ("b", blue, ann, "blue", "ann", None),
        ("c", red, bob, "red", "bob", None), ("d", red, None, "red", None, None),
        ("e", None, None, None, None, None), ("f", None, user_ids["ops"], None, "ops", None),
        ("g", None, user_ids["eve"], None, "eve", None)]
    assert members == {(red, ann, "member"), (blue, ann, "member"), (red, bob, "member")}
    # the keys work as before: no team or user sets a limit or a model list
    row = await KeyStore(database).find_by_name("a")
    assert row is not None
    principal = principal_from_row(row)
    assert principal.levels == () and principal.allowed_models is None and principal.rpm == 5
    for name, scope in scopes.items():  # the owners of admin and auditor keys have the role
        row = await KeyStore(database).find_by_name(name)
        assert row is not None and principal_from_row(row).scope == scope
    assert await KeyStore(database).has_usable_admin()
    await asyncio.to_thread(downgrade, database.url, "0018")  # and back
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        texts = (await conn.execute(sa.select(old.c.name, old.c.owner, old.c.team)
                                    .order_by(old.c.name))).all()
    assert not {"teams", "users", "team_members"} & names
    assert [tuple(r) for r in texts] == [(n, o, t) for n, o, t, _ in rows]
    await asyncio.to_thread(upgrade, database.url)


async def test_a_team_change_appends_a_change_of_each_of_its_keys(database: Database) -> None:
    keys, admin, _ = _admins(database)
    team = await admin.create_team(TeamSpec(name="many"))
    made = [await keys.create(KeySpec(name=f"k{i}", team_id=team["id"])) for i in range(3)]
    await keys.create(KeySpec(name="outside"))
    store = KeyStore(database)
    before = await store.last_change()
    await admin.update_team(team["id"], TeamUpdate(rpm=5))
    changed = await store.changes_since(before)
    assert [(key_id, key_hash) for _, key_id, key_hash in changed] == [
        (k["id"], (await store.get(k["id"]) or {})["key_hash"]) for k in made]
    assert [c[0] for c in changed] == sorted(c[0] for c in changed)


async def test_money_budgets_and_usage_per_user_and_team(database: Database) -> None:
    import time

    from inferd.store.usage import UsageStore
    from inferd.usage import UsageRecord

    keys, admin, ring = _admins(database)
    await ring.reload()
    team = await admin.create_team(TeamSpec(name="search", max_budget=2.5, budget_alert=90,
                                            budget_period="week"))
    user = await admin.create_user(UserSpec(name="ann", max_budget=0.125))
    await admin.set_member(team["id"], user["id"], MemberSpec(role="member"))
    made = await keys.create(KeySpec(name="k", team_id=team["id"], user_id=user["id"],
                                     max_budget=1.0))
    other = await keys.create(KeySpec(name="other"))
    assert (made["max_budget"], made["budget_alert"]) == (1.0, None)
    principal = await ring.authenticate_fresh(made["key"])
    assert (principal.max_budget, principal.budget_alert) == (1.0, 80)
    assert [(lv.kind, lv.max_budget, lv.budget_alert) for lv in principal.levels] == [
        ("user", 0.125, 80), ("team", 2.5, 90)]
    changed = await admin.update_team(team["id"], TeamUpdate(max_budget=None))
    assert changed["max_budget"] is None and changed["budget_alert"] == 90

    now = time.time()
    usage = UsageStore(database)

    def record(key_id: str, cost: float, at: float = now) -> UsageRecord:
        return UsageRecord(at, None, key_id, "m", None, "chat", False, 200, None, 1, 1, 2, 1.0,
                           None, None, None, None, cost)

    await usage.insert_many([record(str(made["id"]), 0.25), record(str(made["id"]), 0.5),
                             record(str(made["id"]), 8.0, now - 86400 * 40),
                             record(str(other["id"]), 0.125)])
    by_team = {r["team_name"]: (r["team_id"], r["requests"], r["cost"])
               for r in await usage.aggregate(group_by=["team"], since=now - 60)}
    assert by_team == {"search": (team["id"], 2, 0.75), None: (None, 1, 0.125)}
    by_user = {r["user_name"]: r["cost"] for r in await usage.aggregate(group_by=["user"])}
    assert by_user == {"ann": 8.75, None: 0.125}
    assert await usage.level_cost_since("team", team["id"], now - 60) == 0.75
    assert await usage.level_cost_since("user", user["id"], 0.0) == 8.75
    assert await usage.cost_since({str(made["id"]): now - 60}) == {str(made["id"]): 0.75}


async def test_the_budget_use_of_each_team_with_a_money_budget(database: Database) -> None:
    """``inferd_team_budget_used_ratio``: the spend of a team's keys in its current period
    over its budget, a series for each team with a money budget and for no other."""
    import time

    from inferd.auth.budget_stats import TeamBudgets
    from inferd.auth.limits import period_bounds
    from inferd.metrics import Metrics
    from inferd.store.usage import UsageStore
    from inferd.usage import UsageRecord

    keys, admin, ring = _admins(database)
    await ring.reload()
    monthly = await admin.create_team(TeamSpec(name="monthly", max_budget=2.0,
                                               budget_period="month"))
    total = await admin.create_team(TeamSpec(name="for ever", max_budget=4.0))
    free = await admin.create_team(TeamSpec(name="free"))
    made = {team["name"]: await keys.create(KeySpec(name=team["name"], team_id=team["id"]))
            for team in (monthly, total, free)}
    now = time.time()
    before = period_bounds("month", now)[0] - 1  # last month

    def record(team: str, cost: float, at: float = now) -> UsageRecord:
        return UsageRecord(at, None, str(made[team]["id"]), "m", None, "chat", False, 200,
                           None, 1, 1, 2, 1.0, None, None, None, None, cost)

    usage = UsageStore(database)
    await usage.insert_many([record("monthly", 0.5), record("monthly", 1.25),
                             record("monthly", 8.0, before), record("for ever", 1.0, before),
                             record("for ever", 2.0), record("free", 3.0)])
    stats = TeamBudgets(usage)
    assert await stats.read(now) == [("monthly", 0.875), ("for ever", 0.75)]
    metrics = Metrics()
    stats.register(metrics)
    text = (await metrics.render_off_loop()).decode()
    assert 'inferd_team_budget_used_ratio{team="monthly"} 0.875' in text
    assert 'inferd_team_budget_used_ratio{team="for ever"} 0.75' in text
    assert 'team="free"' not in text
    # a new spend counts at the next read
    await usage.insert_many([record("for ever", 1.0)])
    assert await stats.read(now) == [("monthly", 0.875), ("for ever", 1.0)]
