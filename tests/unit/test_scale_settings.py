"""The queued generate API's RabbitMQ and Redis variables, and the roles' settings."""

from __future__ import annotations

import pytest

from inferd.jobs.broker import broker_priority, queue_name
from inferd.settings import load_settings


def test_protollm_rabbitmq_and_redis_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INFERD_BROKER_URL", "INFERD_BROKER_PREFIX", "INFERD_REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RABBIT_MQ_HOST", "rabbitmq")
    monkeypatch.setenv("RABBIT_MQ_PORT", "5673")
    monkeypatch.setenv("RABBIT_MQ_LOGIN", "admin")
    monkeypatch.setenv("RABBIT_MQ_PASSWORD", "p@ss/word")
    monkeypatch.setenv("QUEUE_NAME", "llm-tasks")
    monkeypatch.setenv("REDIS_PREFIX", "protollm")
    settings = load_settings()
    assert settings.broker.broker_url == "amqp://admin:p%40ss%2Fword@rabbitmq:5673/"
    assert settings.broker.broker_prefix == "llm-tasks"
    assert settings.broker.redis_prefix == "protollm"
    monkeypatch.setenv("INFERD_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    monkeypatch.setenv("INFERD_BROKER_PREFIX", "inferd-prod")
    monkeypatch.setenv("INFERD_REDIS_PREFIX", "mine")
    settings = load_settings()  # inferd's own variables win
    assert settings.broker.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert (settings.broker.broker_prefix, settings.broker.redis_prefix) == ("inferd-prod", "mine")


def test_rabbitmq_login_defaults_to_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERD_BROKER_URL", raising=False)
    for name in ("RABBIT_MQ_PORT", "RABBIT_MQ_LOGIN", "RABBIT_MQ_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RABBIT_MQ_HOST", "mq")
    assert load_settings().broker.broker_url == "amqp://guest:guest@mq:5672/"


def test_queue_names_and_priorities() -> None:
    assert queue_name("llm-tasks", "smollm2") == "llm-tasks.jobs.smollm2"
    assert broker_priority(0) == 5
    assert broker_priority(3) > broker_priority(0) > broker_priority(-2)
    assert (broker_priority(-100), broker_priority(100)) == (0, 10)


def test_protollm_record_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INFERD_QUEUED_GENERATE_STATUS_PREFIX", "INFERD_QUEUED_GENERATE_ANSWER_PREFIX",
                 "REDIS_PREFIX_FOR_STATUS", "REDIS_PREFIX_FOR_ANSWER"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.queued_generate.queued_generate_status_prefix,
            settings.queued_generate.queued_generate_answer_prefix) == ("job-status", "job-answer")
    monkeypatch.setenv("REDIS_PREFIX_FOR_STATUS", "st")
    monkeypatch.setenv("REDIS_PREFIX_FOR_ANSWER", "ans")
    settings = load_settings()
    assert (settings.queued_generate.queued_generate_status_prefix,
            settings.queued_generate.queued_generate_answer_prefix) == ("st", "ans")
    monkeypatch.setenv("INFERD_QUEUED_GENERATE_STATUS_PREFIX", "mine")
    # inferd's own wins
    assert load_settings().queued_generate.queued_generate_status_prefix == "mine"
