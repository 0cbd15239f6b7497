"""The compose file and the Dockerfile: parsed, linted and checked for what each role needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
ROLES = ("gateway", "worker", "engine")
# What each role reads (README "Scaling out").
NEEDS = {
    "migrate": {"INFERD_DATABASE_URL"},
    "gateway": {"INFERD_DATABASE_URL", "INFERD_BROKER_URL", "INFERD_REDIS_URL",
                "INFERD_ADMIN_KEY"},
    "worker": {"INFERD_DATABASE_URL", "INFERD_BROKER_URL", "INFERD_REDIS_URL"},
    "engine": {"INFERD_DATABASE_URL", "INFERD_ENGINE_URL"},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # resolves the "<<" merge keys
    assert isinstance(loaded, dict)
    return loaded


def test_services_and_their_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "rabbitmq", "redis", "migrate", *ROLES, "vllm"}
    for role in (*ROLES, "migrate"):
        assert services[role]["command"] == [role]
        assert services[role]["build"]["context"] == "../.."
    assert services["vllm"]["profiles"] == ["gpu"]
    assert all("profiles" not in s for n, s in services.items() if n != "vllm")


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        if name == "migrate":
            assert check.get("disable") is True  # a one-shot step
            continue
        assert check["test"][0] == "CMD", name
        assert check["interval"] and check["retries"] >= 3, name


def test_roles_start_after_the_migration_and_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for role in ROLES:
        deps = services[role]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}
        for infra in ("postgres", "rabbitmq", "redis"):
            assert deps[infra] == {"condition": "service_healthy"}, (role, infra)


def test_each_role_gets_the_settings_it_needs(compose: dict[str, Any]) -> None:
    for role, needed in NEEDS.items():
        env = compose["services"][role]["environment"]
        assert needed <= set(env), (role, needed - set(env))
        assert env["INFERD_DATABASE_URL"].startswith("postgresql://")
    env = compose["services"]["gateway"]["environment"]
    assert env["INFERD_BROKER_URL"].startswith("amqp://")
    assert env["INFERD_REDIS_URL"].startswith("redis://")


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    volumes = set(compose["volumes"])
    for name in ("postgres", "rabbitmq", "redis"):
        mounts = compose["services"][name]["volumes"]
        assert any(m.split(":", 1)[0] in volumes for m in mounts), name


def test_secrets_come_from_the_environment_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?", text)
    example = (COMPOSE.parent / ".env.example").read_text()
    for var in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "INFERD_ADMIN_KEY"):
        assert f"{var}=" in example


# The Dockerfile's own tests: tests/deploy/test_image.py.
