"""The compose files: parsed, validated and checked for what each role needs (the Dockerfile:
test_image.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
COMPOSE_GPU = COMPOSE.parent / "compose.gpu.yaml"
ROLES = ("gateway", "worker", "engine")
# The secrets each role reads, and no other (docs/operating/scaling-out.md).
SECRETS = ("INFERD_DATABASE_URL", "INFERD_BROKER_URL", "INFERD_REDIS_URL", "INFERD_ADMIN_KEY",
           "INFERD_SECRET_KEY", "INFERD_ENGINE_API_KEY")
NEEDS = {
    "migrate": {"INFERD_DATABASE_URL"},
    "gateway": {"INFERD_DATABASE_URL", "INFERD_BROKER_URL", "INFERD_REDIS_URL",
                "INFERD_ADMIN_KEY", "INFERD_SECRET_KEY", "INFERD_ENGINE_API_KEY"},
    "worker": {"INFERD_DATABASE_URL", "INFERD_BROKER_URL", "INFERD_REDIS_URL",
               "INFERD_SECRET_KEY"},
    "engine": {"INFERD_ENGINE_API_KEY"},
}
# The Dockerfile target each service's image is built from.
TARGETS = {"migrate": "gateway", "gateway": "gateway", "worker": "gateway", "engine": "engine"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # resolves the "<<" merge keys
    assert isinstance(loaded, dict)
    return loaded


def test_compose_files_pass_the_compose_specification() -> None:
    """Against the published Compose Specification schema (compose-spec/compose-spec,
    schema/compose-spec.json, kept in tests/deploy/schemas/): a misspelt key fails."""
    import jsonschema

    schema = json.loads((Path(__file__).parent / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    for path in (COMPOSE, COMPOSE_GPU):
        validator.validate(yaml.safe_load(path.read_text()))
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["engine"]["stop_grace_perod"] = "130s"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_services_their_commands_and_image_targets(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "rabbitmq", "redis", "migrate", *ROLES}
    for role, target in TARGETS.items():
        assert services[role]["command"] == [role]
        assert services[role]["build"] == {"context": "../..", "target": target}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for target in set(TARGETS.values()):
        if not re.search(rf"^FROM .* AS {target}$", dockerfile, re.M | re.I):
            pytest.skip(f"the Dockerfile has no target {target} yet")


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        if name == "migrate":
            assert check.get("disable") is True  # a one-shot step
            continue
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["interval"] and check["retries"] >= 3, name


def test_roles_start_after_the_migration_and_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for role in ("gateway", "worker"):
        deps = services[role]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}
        for infra in ("postgres", "rabbitmq", "redis"):
            assert deps[infra] == {"condition": "service_healthy"}, (role, infra)
    # an engine registers through the gateway
    assert services["engine"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}


def test_each_role_gets_only_the_secrets_it_uses(compose: dict[str, Any]) -> None:
    for role, needed in NEEDS.items():
        env = compose["services"][role]["environment"]
        assert {k for k in env if k in SECRETS} == needed, role
        for name in needed:  # from .env, refused when empty
            assert re.fullmatch(r".*\$\{[A-Z_]+:\?[^}]*\}.*", env[name]), (role, name)
    env = compose["services"]["gateway"]["environment"]
    assert env["INFERD_DATABASE_URL"].startswith("postgresql://")
    assert env["INFERD_BROKER_URL"].startswith("amqp://")
    assert env["INFERD_REDIS_URL"].startswith("redis://")


def test_engines_scale_as_separate_replicas(compose: dict[str, Any]) -> None:
    """`--scale engine=2`: nothing two instances would share (a container name, a fixed
    advertised URL or host name, a published port, a volume)."""
    engine = compose["services"]["engine"]
    for shared in ("container_name", "hostname", "ports", "volumes"):
        assert shared not in engine, shared
    assert not {"INFERD_ENGINE_URL", "INFERD_ENGINE_HOST", "INFERD_ENGINE_INSTANCE"} \
        & set(engine["environment"])
    assert engine["environment"]["INFERD_GATEWAY_URL"] == "http://gateway:8000"


def test_stop_grace_matches_the_shutdown_grace(compose: dict[str, Any]) -> None:
    for role in ROLES:
        service = compose["services"][role]
        grace = re.fullmatch(r"\$\{INFERD_SHUTDOWN_GRACE_SECONDS:-(\d+)\}",
                             service["environment"]["INFERD_SHUTDOWN_GRACE_SECONDS"])
        assert grace and int(grace[1]) >= 120
        assert service["stop_grace_period"] == f"{int(grace[1]) + 10}s", role


def test_roles_run_locked_down(compose: dict[str, Any]) -> None:
    for role in (*ROLES, "migrate"):
        service = compose["services"][role]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    volumes = set(compose["volumes"])
    for name in ("postgres", "rabbitmq", "redis"):
        mounts = compose["services"][name]["volumes"]
        assert any(m.split(":", 1)[0] in volumes for m in mounts), name


def test_secrets_come_from_the_environment_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text() + COMPOSE_GPU.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD", "INFERD_ADMIN_KEY",
            "INFERD_SECRET_KEY", "INFERD_ENGINE_API_KEY", "VLLM_API_KEY"} <= used
    example = dict(line.split("=", 1) for line in
                   (COMPOSE.parent / ".env.example").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    for var in used:
        assert example[var] == "", f"{var} has a value in .env.example"
    assert subprocess.run(["git", "check-ignore", "-q", "deploy/compose/.env"],
                          cwd=ROOT).returncode == 0


def test_gpu_file_registers_vllm_with_its_key() -> None:
    from inferd.settings import RemoteModelSpec

    gpu = yaml.safe_load(COMPOSE_GPU.read_text())
    vllm = gpu["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:v")
    flags = {a.split("=", 1)[0] for a in vllm["command"]}
    assert {"--max-model-len", "--gpu-memory-utilization", "--tensor-parallel-size",
            "--served-model-name"} <= flags
    assert vllm["environment"]["VLLM_API_KEY"] == "${VLLM_API_KEY:?set VLLM_API_KEY}"
    assert any(m.endswith(":/models") for m in vllm["volumes"])
    for role in ("gateway", "worker"):
        models = gpu["services"][role]["environment"]["INFERD_REMOTE_MODELS"]
        (model,) = [RemoteModelSpec.model_validate(m) for m in json.loads(models)]
        (replica,) = model.replicas
        assert replica.url == "http://vllm:8000/v1"
        assert replica.api_key == "${VLLM_API_KEY:?set VLLM_API_KEY}"


def test_makefile_stresstest_runs_inferd_bench_against_a_gateway() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^stresstest:.*\n\t(.+)$", makefile, re.M)
    assert recipe is not None
    assert "inferd bench" in recipe[1] and "$(URL)" in recipe[1]


# The Dockerfile's own tests: tests/deploy/test_image.py.
