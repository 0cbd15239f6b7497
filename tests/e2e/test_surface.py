"""Small defects of the HTTP surface, through ``inferd serve`` (the echo engine) and the
official ``openai`` SDK: times that are not numbers, image parts a text model cannot read,
``/metrics`` and ``/ready`` behind a key when the settings say so, and the UI's security
headers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import InferdProcess

ADMIN_KEY = "sk-test-admin-surface-0123456789abcdef"
MODELS = json.dumps([{"name": "echo", "kind": "echo"}])
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_METRICS_REQUIRE_KEY": "true", "INFERD_READY_REQUIRE_KEY": "true"}
    with InferdProcess(tmp_path_factory.mktemp("surface"), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def user_key(admin: httpx.Client) -> str:
    response = admin.post("/admin/v1/keys", json={"name": "surface-user"})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def _refused(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return error


@pytest.mark.parametrize("path", ["/v1/usage/series", "/admin/v1/usage/series"])
@pytest.mark.parametrize(("query", "param"), [
    ({"from": "nan"}, "from"), ({"from": "NaN", "to": "nan"}, "from"),
    ({"to": "inf"}, "to"), ({"from": "-inf"}, "from"), ({"to": "-Infinity"}, "to"),
])
def test_times_that_are_not_finite_numbers_are_a_400(admin: httpx.Client, path: str,
                                                     query: dict[str, str], param: str) -> None:
    _refused(admin.get(path, params=query), param)
    assert admin.get(path, params={"from": "1700000000", "to": "1700003600"}).status_code == 200


def test_an_image_part_to_a_text_engine_is_a_400_naming_the_part(server: InferdProcess,
                                                                  user_key: str) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=user_key, max_retries=0) as client:
        for messages, where in [
            ([{"role": "user", "content": [{"type": "text", "text": "what is it?"}, IMAGE]}],
             "messages[0].content[1]"),
            ([{"role": "user", "content": [IMAGE]}, {"role": "assistant", "content": "a cat"},
              {"role": "user", "content": "and now?"}], "messages[0].content[0]"),
        ]:
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model="echo", messages=messages)  # type: ignore[arg-type]
            error = info.value.body
            assert isinstance(error, dict) and error["param"] == where, error
            assert "images" in error["message"]
        answer = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": [
                {"type": "text", "text": "only words"}]}])
        assert answer.choices[0].message.content == "only words"


def test_metrics_need_a_key_when_the_setting_says_so(server: InferdProcess,
                                                     user_key: str) -> None:
    bare = httpx.get(server.url + "/metrics")
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    for headers in ({"Authorization": f"Bearer {user_key}"}, {"X-API-Key": user_key}):
        keyed = httpx.get(server.url + "/metrics", headers=headers)
        assert keyed.status_code == 200 and "inferd_" in keyed.text
        assert keyed.headers["content-type"].startswith("text/plain")


def test_ready_names_the_models_only_to_keyed_callers(server: InferdProcess,
                                                      user_key: str) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        bare = httpx.get(server.url + "/ready", headers=headers)
        assert bare.status_code == 200  # probes keep working without a key
        assert bare.json()["status"] == "ready" and bare.json()["store"] is True
        assert "models" not in bare.json() and "echo" not in bare.text
    keyed = httpx.get(server.url + "/ready", headers={"X-API-Key": user_key})
    assert keyed.status_code == 200 and keyed.json()["models"] == {"echo": True}
    assert httpx.get(server.url + "/health").status_code == 200


def test_ui_pages_carry_security_headers(server: InferdProcess) -> None:
    for path in ("/ui/", "/ui", "/ui/static/js/main.js", "/ui/static/style.css", "/"):
        response = httpx.get(server.url + path)
        assert response.status_code in (200, 307), (path, response.status_code)
        csp = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
