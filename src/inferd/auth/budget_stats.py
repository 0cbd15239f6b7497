"""The budget use of each team with a money budget, as the gauge
``inferd_team_budget_used_ratio{team}``: the cost of the team's keys in the current budget
period (from the usage records) over its ``max_budget`` (1: used up).

Read from the database when ``/metrics`` is scraped and at most every ``every`` seconds, like
the job figures (``inferd.jobs.stats``): every process that shares the database reports the
same values, so dashboards and alerts take ``max by (team)``. The label values are the names of
the teams that have a money budget, a set an administrator makes: a team without one has no
series, and no client's string ever becomes a label.
"""

from __future__ import annotations

import time

from inferd.auth.limits import period_bounds
from inferd.auth.principal import BudgetPeriod
from inferd.metrics import Metrics, Series, StoreReading
from inferd.store.usage import UsageStore

REFRESH_EVERY = 5.0
PERIODS: dict[str | None, BudgetPeriod] = {"day": "day", "week": "week", "month": "month"}


class TeamBudgets:
    """Budget use per team, read from the usage records."""

    def __init__(self, store: UsageStore, every: float = REFRESH_EVERY) -> None:
        self.store = store
        self.ratios = StoreReading(lambda: self.read(time.time()), every)

    def register(self, metrics: Metrics) -> None:
        metrics.register_refresh(self.ratios.refresh)
        metrics.register_family(
            "inferd_team_budget_used_ratio",
            "Spend of each team with a money budget in its current budget period, over the "
            "budget (1: used up)",
            ["team"],
            self.series,
        )

    async def read(self, wall: float) -> list[tuple[str, float]]:
        """``(team name, spend / budget)`` of every team with a money budget, at ``wall``."""
        teams = await self.store.budgeted_teams()
        starts: dict[int, float] = {}
        for team_id, _, _, period in teams:
            starts[team_id] = period_bounds(PERIODS.get(period), wall)[0]
        spent = await self.store.team_costs_since(starts)
        # a budget of 0 is used up from the start
        return [(name, spent[team_id] / budget if budget > 0 else 1.0)
                for team_id, name, budget, _ in teams]

    def series(self) -> Series:
        return [((name,), ratio) for name, ratio in self.ratios.value or ()]
