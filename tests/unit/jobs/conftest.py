"""A job system on a SQLite file with the echo engine: every part real, nothing started that
a test does not ask for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferd.auth.principal import OPEN_MODE
from inferd.engines.echo import EchoEngine
from inferd.inference import Inference
from inferd.jobs.cluster import build_jobs
from inferd.jobs.service import JobService
from inferd.metering import Metering
from inferd.routing.router import Replica, Router
from inferd.settings import JobSettings, ModelSpec, load_settings
from inferd.store.db import Database
from tests.conftest import copy_database


@dataclass
class Parts:
    db: Database
    router: Router
    inference: Inference
    metering: Metering

    def service(self, **settings: object) -> JobService:
        values = {"sweep_seconds": 0.05, "event_flush_seconds": 0.0, **settings}
        return build_jobs(self.db, self.router, self.inference,
                          JobSettings.model_validate(values), open_mode=OPEN_MODE)


def add_echo(router: Router, name: str = "echo") -> None:
    router.add(Replica(id=f"local:{name}", model=name,
                       engine=EchoEngine(ModelSpec(name=name, kind="echo"))))


@pytest.fixture
async def parts(tmp_path: Path, sqlite_template: str) -> AsyncIterator[Parts]:
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    if settings.storage.resolved_database_url().startswith("sqlite"):  # a copy of one migrated file
        await copy_database(sqlite_template, settings.storage.resolved_database_url())
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    router = Router()
    add_echo(router)
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    inference = Inference(router, metering)
    try:
        yield Parts(db, router, inference, metering)
    finally:
        await inference.close()
        await metering.close()
        await db.close()
