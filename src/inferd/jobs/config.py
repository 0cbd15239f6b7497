"""Settings of the job system (``INFERD_JOB_*`` variables, or the ``jobs:`` map of the config
file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    """How jobs run: workers per model, leases, retries, retention."""

    model_config = SettingsConfigDict(env_prefix="INFERD_JOB_", extra="ignore")

    # Jobs of one model run at once in this process (``INFERD_JOB_CONCURRENCY``).
    concurrency: int = Field(default=1, ge=0, le=256)
    # Per-model override, e.g. ``{"smollm2-135m-instruct": 2}``.
    concurrency_per_model: dict[str, int] = Field(default_factory=dict)
    # A worker renews its lease every third of this; a job whose lease lapses runs again.
    lease_seconds: float = Field(default=30.0, gt=0.5)
    max_attempts: int = Field(default=3, ge=1)
    # Finished jobs, batches and files are deleted this long after they finished.
    retention_seconds: float = Field(default=7 * 86400.0, gt=0)
    # How often lost jobs are re-enqueued and deadlines enforced.
    sweep_seconds: float = Field(default=2.0, gt=0)
    # Token events are written at most this often per job.
    event_flush_seconds: float = Field(default=0.1, ge=0)
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    max_batch_lines: int = Field(default=50_000, ge=1)

    def workers_for(self, model: str) -> int:
        return self.concurrency_per_model.get(model, self.concurrency)

    @classmethod
    def load(cls, config_file: Path | None) -> JobSettings:
        """Environment over the config file's ``jobs:`` map over defaults."""
        file_values: dict[str, Any] = {}
        if config_file is not None and Path(config_file).exists():
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
            if isinstance(loaded, dict) and isinstance(loaded.get("jobs"), dict):
                file_values = loaded["jobs"]
        from_env = cls()
        merged = {**file_values, **{k: getattr(from_env, k) for k in from_env.model_fields_set}}
        return cls.model_validate(merged)
