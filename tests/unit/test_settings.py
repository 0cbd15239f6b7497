"""Settings: CLI model specs, config file, environment, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inferd.settings import (
    FIELD_GROUPS,
    FLAT_GROUPS,
    HttpSettings,
    ModelSpec,
    Settings,
    async_database_url,
    load_settings,
)


def test_parse_cli_model(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    spec = ModelSpec.parse_cli(f"mine={gguf},n_ctx=4096,threads=3")
    assert (spec.name, spec.path, spec.n_ctx, spec.n_threads) == ("mine", str(gguf), 4096, 3)
    assert spec.kind == "llamacpp"
    with pytest.raises(ValueError, match="NAME=PATH"):
        ModelSpec.parse_cli("no-path")
    with pytest.raises(ValueError, match="does not exist"):
        ModelSpec.parse_cli(f"x={tmp_path / 'missing.gguf'}")


def test_threads_setting_reaches_models_without_their_own(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    models = [ModelSpec.parse_cli(f"plain={gguf}"), ModelSpec.parse_cli(f"own={gguf},threads=1"),
              ModelSpec(name="e", kind="echo")]
    specs = {s.name: s.n_threads
             for s in Settings(threads=3, bundled_models=False, models=models).engines.all_models()}
    assert specs == {"plain": 3, "own": 1, "e": None}
    unset = Settings(bundled_models=False, models=models).engines.all_models()
    assert [s.n_threads for s in unset] == [None, 1, None]


def test_config_file_then_env_then_overrides(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text("port: 9000\nhost: 127.0.0.2\nmodels:\n  - {name: e, kind: echo}\n")
    monkeypatch.setenv("INFERD_PORT", "9100")
    settings = load_settings(config, host="127.0.0.3")
    assert settings.http.port == 9100  # env beats file
    assert settings.http.host == "127.0.0.3"  # explicit beats env
    assert [m.name for m in settings.engines.models] == ["e"]


def test_models_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERD_MODELS", '[{"name": "echo", "kind": "echo"}]')
    monkeypatch.setenv("INFERD_BUNDLED_MODELS", "false")
    settings = load_settings()
    assert [m.name for m in settings.engines.all_models()] == ["echo"]


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERD_PORT", "99999")
    with pytest.raises(ValueError):
        load_settings()
    monkeypatch.delenv("INFERD_PORT")
    monkeypatch.setenv("INFERD_DATABASE_URL", "oracle://x")
    with pytest.raises(ValueError):
        load_settings()


def test_async_driver_mapping() -> None:
    assert async_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("mysql://root@h/db") == "mysql+aiomysql://root@h/db"
    assert async_database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_protollm_redis_variables_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "cache.internal")
    monkeypatch.setenv("REDIS_PORT", "6380")
    assert load_settings().broker.redis_url == "redis://cache.internal:6380/0"
    monkeypatch.setenv("INFERD_REDIS_URL", "redis://127.0.0.1:6379/2")
    assert load_settings().broker.redis_url == "redis://127.0.0.1:6379/2"  # inferd's own wins


@pytest.mark.parametrize(("text", "named"), [
    ("prot: 9000\n", "'prot'"),
    ("jobs:\n  concurency: 2\n", "'jobs.concurency'"),
    ("models:\n  - {name: e, kind: echo, n_cxt: 4}\n", "'models[0].n_cxt'"),
    ("remote_models:\n  - name: r\n    replicas: [{url: 'http://h', wieght: 2}]\n",
     "'remote_models[0].replicas[0].wieght'"),
])
def test_unknown_config_keys_are_refused_naming_key_and_file(tmp_path: Path, text: str,
                                                             named: str) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match="unknown key") as refused:
        load_settings(config)
    assert named in str(refused.value) and str(config) in str(refused.value)


def test_job_settings_from_the_file_under_the_environment(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text("jobs:\n  concurrency: 3\n  max_attempts: 5\n"
                      "  concurrency_per_model: {m: 2}\n")
    monkeypatch.setenv("INFERD_JOB_MAX_ATTEMPTS", "7")
    jobs = load_settings(config).jobs
    assert (jobs.concurrency, jobs.max_attempts) == (3, 7)  # env beats file
    assert jobs.workers_for("m") == 2 and jobs.workers_for("other") == 3
    monkeypatch.delenv("INFERD_JOB_MAX_ATTEMPTS")
    assert load_settings().jobs.max_attempts == 3  # defaults without a file


@pytest.mark.parametrize(("fields", "named"), [
    ({"steps": 50, "max_steps": 40}, "max_steps 40"),
    ({"size": "1024x1024", "max_size": "512x512"}, "max_size 512x512"),
    ({"size": "64x2048", "max_size": "1024x1024"}, "max_size 1024x1024"),
])
def test_an_image_models_defaults_must_be_within_its_bounds(tmp_path: Path,
                                                            fields: dict[str, object],
                                                            named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ModelSpec.model_validate({"name": "sd", "kind": "diffusers", "path": str(tmp_path),
                                  **fields})


def test_storage_quota_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().access.storage_quota_bytes, Settings().access.storage_quota_objects) == (
        1024**3, 10_000)
    monkeypatch.setenv("INFERD_STORAGE_QUOTA_BYTES", "0")
    monkeypatch.setenv("INFERD_STORAGE_QUOTA_OBJECTS", "5")
    access = Settings().access
    assert (access.storage_quota_bytes, access.storage_quota_objects) == (0, 5)
    monkeypatch.setenv("INFERD_STORAGE_QUOTA_OBJECTS", "-1")
    with pytest.raises(ValueError):
        Settings()


def test_fair_queueing_settings_and_a_replicas_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    from inferd.routing.manage import ReplicaUpdate
    from inferd.settings import ReplicaSpec

    monkeypatch.setenv("INFERD_QUEUE_WEIGHTS", '{"key-1": 3, "team-bot": 0.5}')
    monkeypatch.setenv("INFERD_FAIR_QUEUE", "false")
    settings = Settings()
    assert settings.queue.queue_weights == {"key-1": 3.0, "team-bot": 0.5}
    assert settings.queue.fair_queue is False
    monkeypatch.setenv("INFERD_QUEUE_WEIGHTS", '{"key-1": 0}')
    with pytest.raises(ValueError, match=r"queue_weights\.key-1"):
        Settings()
    for capacity in (1, 100_000, "auto"):
        spec = ReplicaSpec(url="http://h/v1", options={"capacity": capacity})
        assert spec.options["capacity"] == capacity
    for capacity in (0, -1, 100_001, 2.5, True, "many"):
        with pytest.raises(ValueError, match=r"options\.capacity"):
            ReplicaSpec(url="http://h/v1", options={"capacity": capacity})
    for reserve in (0, 1, 100_000):
        spec = ReplicaSpec(url="http://h/v1", options={"capacity": 3, "reserve": reserve})
        assert spec.options["reserve"] == reserve
    for reserve in (-1, 100_001, 0.5, True, "1"):
        with pytest.raises(ValueError, match=r"options\.reserve"):
            ReplicaSpec(url="http://h/v1", options={"capacity": 3, "reserve": reserve})
        with pytest.raises(ValueError, match=r"options\.reserve"):
            ReplicaUpdate(options={"reserve": reserve})


def test_flat_keys_reach_their_group_over_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERD_HOST", "127.0.0.9")
    monkeypatch.setenv("INFERD_ADMIN_KEY", "from-the-environment")
    settings = Settings(port=9001, auth="on", redis_url="redis://cache:6379/0")
    assert (settings.http.host, settings.http.port) == ("127.0.0.9", 9001)  # env fills the rest
    assert (settings.access.auth, settings.access.admin_key) == ("on", "from-the-environment")
    assert settings.broker.redis_url == "redis://cache:6379/0"
    assert HttpSettings().host == "127.0.0.9"  # a group alone reads the same variables
    changed = settings.with_values(role="engine", port=9002)
    assert (changed.cluster.role, changed.http.port, changed.http.host) == (
        "engine", 9002, "127.0.0.9")
    assert (settings.cluster.role, settings.http.port) == ("serve", 9001)  # a copy


def test_every_setting_has_one_group_and_its_variable() -> None:
    assert len(FIELD_GROUPS) == sum(len(group.model_fields) for group in FLAT_GROUPS.values())
    for group, cls in FLAT_GROUPS.items():
        assert Settings.model_fields[group].annotation is cls
        assert cls.model_config["env_prefix"] == "INFERD_"


@pytest.mark.parametrize(("where", "named"), [
    ("file", "port"), ("env", "port"), ("keyword", "port")])
def test_a_bad_value_is_named_by_its_flat_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              where: str, named: str) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text("port: 99999\n" if where == "file" else "host: 127.0.0.2\n")
    if where == "env":
        monkeypatch.setenv("INFERD_PORT", "99999")
    with pytest.raises(ValidationError) as refused:
        load_settings(config, port=99999 if where == "keyword" else None)
    assert [error["loc"] for error in refused.value.errors()] == [(named,)]


def test_the_file_stays_flat_and_jobs_a_map(tmp_path: Path) -> None:
    config = tmp_path / "inferd.yaml"
    config.write_text("port: 9005\nadmin_key: k\nrequest_log_redact: hash\n"
                      "jobs:\n  concurrency: 2\n")
    settings = load_settings(config)
    assert (settings.http.port, settings.access.admin_key) == (9005, "k")
    assert settings.requests.request_log_redact == "hash"
    assert settings.jobs.concurrency == 2 and settings.config_file == config
    config.write_text("http:\n  port: 9005\n")  # no sections but jobs
    with pytest.raises(ValueError, match="unknown key 'http'"):
        load_settings(config)
