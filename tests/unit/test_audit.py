"""What the audit log keeps of a change: secrets masked, the actor of the request or command."""

from __future__ import annotations

from inferd.audit import MASK, SYSTEM, Actor, acting_as, current_actor, masked, request_scope
from inferd.auth.principal import OPEN_MODE, Principal


def test_secrets_are_masked_at_any_depth() -> None:
    view = {
        "name": "svc",
        "api_key": "sk-live-1",
        "webhook_secret": "whsec_x",
        "has_api_key": True,
        "prefix": "sk-inferd-ab",
        "key_id": 4,
        "url": "https://u:p@host.example/v1?token=t0k&x=1",
        "options": {
            "headers": {"Authorization": "Bearer abc", "X-Trace": "trace-7"},
            "health_url": "http://h/health?key=hk9",
            "client_secret": "cs",
            "nested": [{"password": "pw", "ok": 1}],
        },
        "Proxy-Authorization": "Basic zz",
        "access_token": "at",
        "empty_key": None,
        "key": "sk-inferd-full",
        "models": ["a", "b"],
        "rpm": 5,
    }
    out = masked(view)
    text = repr(out)
    for secret in (
        "sk-live-1",
        "whsec_x",
        ":p@",
        "t0k",
        "abc",
        "trace-7",
        "hk9",
        "cs",
        "pw",
        "zz",
        "'at'",
        "sk-inferd-full",
    ):
        assert secret not in text, secret
    assert out["api_key"] == MASK and out["key"] == MASK
    assert out["has_api_key"] is True  # a flag tells there is a secret, not what it is
    assert out["prefix"] == "sk-inferd-ab" and out["key_id"] == 4
    assert out["url"] == "https://***@host.example/v1?token=***&x=***"
    assert out["options"]["headers"] == {"Authorization": MASK, "X-Trace": MASK}
    assert out["options"]["nested"] == [{"password": MASK, "ok": 1}]
    assert out["empty_key"] is None  # nothing to hide
    assert out["models"] == ["a", "b"] and out["rpm"] == 5
    assert view["api_key"] == "sk-live-1"  # the view itself is left as it was


def test_plain_values_pass_through() -> None:
    assert masked(None) is None
    assert masked({"count": 3}) == {"count": 3}
    assert masked([{"token": "x"}]) == [{"token": MASK}]


def test_the_actor_is_the_requests_key_the_command_or_the_system() -> None:
    assert current_actor() is SYSTEM
    principal = Principal(key_id="12", scope="admin", name="ops")
    token = request_scope.set(
        {"state": {"principal": principal, "request_id": "r-9"}, "client": ("192.0.2.1", 5000)}
    )
    try:
        assert current_actor() == Actor(
            key_id="12", name="ops", scope="admin", address="192.0.2.1", request_id="r-9"
        )
        cli = Actor(name="inferd command", via="cli")
        with acting_as(cli):
            assert current_actor() is cli
    finally:
        request_scope.reset(token)
    token = request_scope.set({"state": {"principal": OPEN_MODE}, "client": None})
    try:
        actor = current_actor()
        assert actor.scope == "open" and actor.key_id is None and actor.address is None
    finally:
        request_scope.reset(token)
