"""Cluster safety at start, the advertised engine URL, and the drain signal."""

from __future__ import annotations

import pytest

from inferd.auth.bootstrap import StartupRefused, placeholder_reason, unsafe_cluster_settings
from inferd.cli import advertised_url
from inferd.lifecycle import Drain
from inferd.settings import HttpSettings, Settings

GOOD_KEY = "q3VxP0b7Yk2mRt9ZcL4wHs8N1aJdFe6G"
FERNET = "dGhpcyBpcyBhIGZlcm5ldCBrZXkgb2YgMzIgYnl0ZXM="


@pytest.mark.parametrize("key", [
    "change-me-change-me-change-me-00", "sk-example-admin-key-0123456789",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "short-key", "my-SECRET-admin-key-123456789",
    "0123401234012340123401234"])
def test_placeholders_are_recognised(key: str) -> None:
    assert placeholder_reason(key) is not None


def test_a_generated_key_is_not_a_placeholder() -> None:
    assert placeholder_reason(GOOD_KEY) is None


def _check(settings: Settings) -> None:
    unsafe_cluster_settings(settings.cluster, settings.access, host=settings.http.host,
                            secret_key=settings.storage.secret_key)


@pytest.mark.parametrize("role", ["gateway", "worker", "engine"])
def test_a_cluster_role_refuses_a_placeholder_admin_key(role: str) -> None:
    settings = Settings(role=role, host="0.0.0.0", admin_key="change-me-please-change-me-0000",
                        secret_key=FERNET, engine_api_key=GOOD_KEY[::-1])
    with pytest.raises(StartupRefused, match="INFERD_ADMIN_KEY looks like a placeholder"):
        _check(settings)


@pytest.mark.parametrize("role", ["gateway", "worker"])
def test_a_cluster_role_refuses_to_store_secrets_in_plaintext(role: str) -> None:
    settings = Settings(role=role, host="0.0.0.0", admin_key=GOOD_KEY)
    with pytest.raises(StartupRefused, match="needs INFERD_SECRET_KEY"):
        _check(settings)


def test_an_engine_needs_a_key_of_its_own() -> None:
    base = {"role": "engine", "host": "0.0.0.0", "secret_key": FERNET, "admin_key": GOOD_KEY}
    with pytest.raises(StartupRefused, match="needs INFERD_ENGINE_API_KEY"):
        _check(Settings(**base))
    with pytest.raises(StartupRefused, match="must not be the admin key"):
        _check(Settings(**base, engine_api_key=GOOD_KEY))
    _check(Settings(**base, engine_api_key=GOOD_KEY[::-1]))


def test_development_loopback_and_serve_are_exempt() -> None:
    unsafe = {"admin_key": "change-me-please-change-me-0000"}
    _check(Settings(role="gateway", host="0.0.0.0", env="development", **unsafe))
    _check(Settings(role="gateway", host="127.0.0.1", **unsafe))
    _check(Settings(role="serve", host="0.0.0.0", **unsafe))


@pytest.mark.parametrize(("host", "url"), [
    ("10.1.2.3", "http://10.1.2.3:8000/v1"),
    ("fd00::1:2", "http://[fd00::1:2]:8000/v1"),
    ("[fd00::7]", "http://[fd00::7]:8000/v1"),
    ("engine-0.engines", "http://engine-0.engines:8000/v1")])
def test_the_engine_url_brackets_ipv6(host: str, url: str) -> None:
    assert advertised_url(HttpSettings(host="::", port=8000), host) == url


def test_the_drain_tells_its_listeners_once() -> None:
    drain = Drain()
    calls: list[str] = []
    undo = drain.on_begin(lambda: calls.append("a"))
    assert not drain.active
    drain.begin(30.0)
    drain.begin(1.0)  # a second signal does not shorten nor extend the grace
    assert calls == ["a"] and drain.active and drain.grace == 30.0
    assert 0 < drain.remaining() <= 30.0
    late: list[str] = []
    drain.on_begin(lambda: late.append("b"))  # registered after the start: called at once
    assert late == ["b"]
    undo()
