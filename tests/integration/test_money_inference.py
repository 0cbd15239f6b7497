"""Money budgets through ``Inference`` on a real SQLite: a team's budget lets through exactly
the requests it pays for (worst case reserved, real cost settled from the price book), the
refusal is a 429 ``insufficient_quota``, the alert is counted once, usage is grouped by user
and team with their cost, and after a restart the budget starts from the usage records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from inferd.auth.admin import KeyAdmin, KeySpec
from inferd.auth.keys import KeyRing
from inferd.auth.limits import NANOS, BudgetAlerts, LocalLimiter
from inferd.auth.principal import Principal
from inferd.auth.teams import MemberSpec, TeamAdmin, TeamSpec, UserSpec
from inferd.engines.echo import EchoEngine
from inferd.errors import RateLimited
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.prices import Price
from inferd.routing.router import Replica, Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec, load_settings
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.teams import TeamStore

# Output tokens at 0.5 each, input free: a request of max_tokens 4 on 8 words costs exactly
# 2.0, its worst case as well (a binary fraction: exact in the database's double column).
PRICE = Price(input=Decimal(0), output=Decimal(500_000))
ASK = {"model": "echo", "max_tokens": 4,
       "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}


def _router() -> Router:
    router = Router()
    router.add(Replica(id="local:echo", model="echo",
                       engine=EchoEngine(ModelSpec(name="echo", kind="echo"))))
    return router


async def _principal(db: Database) -> tuple[Principal, int, int]:
    ring = KeyRing(KeyStore(db))
    await ring.reload()
    teams = TeamAdmin(TeamStore(db), ring)
    team = await teams.create_team(TeamSpec(name="search", max_budget=10.0, budget_period="day",
                                            budget_alert=75))
    user = await teams.create_user(UserSpec(name="ann"))
    await teams.set_member(team["id"], user["id"], MemberSpec(role="member"))
    made = await KeyAdmin(KeyStore(db), ring).create(
        KeySpec(name="k", team_id=team["id"], user_id=user["id"]))
    assert made["key"] and (await teams.get_team(team["id"]))["max_budget"] == 10.0
    return await ring.authenticate_fresh(made["key"]), team["id"], user["id"]


async def test_a_team_money_budget_end_to_end(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    metering.prices.set_model("echo", PRICE)
    inference = Inference(_router(), metering,
                          limiter=LocalLimiter(BudgetAlerts(metering.metrics)))
    request = ChatCompletionRequest.model_validate(ASK)
    try:
        principal, team_id, user_id = await _principal(db)
        level = principal.levels[0]
        assert (level.kind, level.max_budget, level.budget_alert) == ("team", 10.0, 75)
        served = 0
        with pytest.raises(RateLimited) as refused:
            for _ in range(10):
                answer = (await inference.chat(request, principal)).wire()
                assert answer["usage"]["completion_tokens"] == 4
                served += 1
        assert served == 5  # 5 x 2.0 = 10.0: no more, and none refused while room remained
        assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
        assert "the team 'search'" in refused.value.message
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert metering.metrics.child("budget_alerts", "team")._value.get() == 1
        store = await metering.flushed_store()
        by_team = await store.aggregate(group_by=["team"])
        assert [(r["team_id"], r["team_name"], r["cost"]) for r in by_team
                if r["team_id"] is not None] == [(team_id, "search", 10.0)]
        by_user = await store.aggregate(group_by=["user", "model"])
        assert [(r["user_name"], r["model"], r["requests"], r["cost"]) for r in by_user
                if r["user_id"] == user_id] == [("ann", "echo", 6, 10.0)]
    finally:
        await inference.close()

    # a restart: a fresh limiter, the budget seeded from the usage records' cost
    restarted = Inference(_router(), metering, limiter=LocalLimiter())
    try:
        await restarted.seed_budgets([principal])
        with pytest.raises(RateLimited) as again:
            await restarted.chat(request, principal)
        assert again.value.code == "insufficient_quota"
    finally:
        await restarted.close()
        await metering.close()
        await db.close()


async def test_the_worst_case_counts_every_choice(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    metering.prices.set_model("echo", PRICE)
    inference = Inference(_router(), metering, limiter=LocalLimiter())
    try:
        principal, _, _ = await _principal(db)  # a budget of 10.0: 5 choices of 2.0
        limiter = inference.limiter
        assert isinstance(limiter, LocalLimiter)
        with pytest.raises(RateLimited):  # 6 choices: 12.0 at worst, refused before it runs
            await inference.chat(ChatCompletionRequest.model_validate({**ASK, "n": 6}),
                                 principal)
        assert limiter.money_spent(principal.levels[0].limit_id) == 0  # nothing taken
        await inference.chat(ChatCompletionRequest.model_validate(ASK), principal)
        assert limiter.money_spent(principal.levels[0].limit_id) == 2 * NANOS
    finally:
        await inference.close()
        await metering.close()
        await db.close()
