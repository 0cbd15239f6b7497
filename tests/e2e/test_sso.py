"""Single sign-on against a real OpenID provider: the ``oidc-provider`` package run with Node
(``tests/e2e/oidc/provider.mjs``, installed by ``scripts/oidc.sh``) on a loopback port, and
``inferd serve`` configured for it.

Chromium signs in through the provider's login page and lands in the UI as that user, with the
memberships and role the group rules give; the provider's access tokens work as bearers on the
API (models, a chat) while an expired, forged or wrong-audience token is refused with 401;
after the provider rotates its keys a token signed with the new key is accepted; a failed
login is audited."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import openai
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.e2e.test_ui_a11y import AXE, axe
from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, wait
from tests.helpers import ROOT, InferdProcess, free_port

OIDC_DIR = ROOT / ".cache" / "oidc"
HAVE_PROVIDER = bool(shutil.which("node")) and (
    OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists()
REQUIRED = os.environ.get("INFERD_REQUIRE_SERVICES") == "1"

pytestmark = pytest.mark.skipif(
    not HAVE_PROVIDER and not REQUIRED,
    reason="Node or oidc-provider is missing (scripts/oidc.sh installs it)")

ADMIN_KEY = "sk-admin-sso-0123456789abcdef0123"
AUDIENCE = "inferd-api"
# A client of the provider the tests sign in with themselves (to hold access tokens); its
# redirect is never followed, only read.
CLI_CLIENT = "inferd-cli"
CLI_REDIRECT = "http://127.0.0.1:9/callback"
ACCOUNTS = {
    "alice": {"name": "Alice", "email": "alice@example.org",
              "groups": ["ml-engineers", "inferd-admins"]},
    "bob": {"name": "Bob", "email": "bob@example.org", "groups": ["ml-readers"]},
}


def _key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"},
                               private=True)


class Provider:
    """``node provider.mjs`` on a fixed loopback port; ``restart`` with other keys."""

    def __init__(self, workdir: Path, port: int, inferd_port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.inferd_port = inferd_port  # where inferd will listen: its redirect URI's port
        self.redirect = f"http://127.0.0.1:{inferd_port}/ui/sso/callback"
        self.proc: subprocess.Popen[str] | None = None
        self.keys: list[RSAKey] = []

    def start(self, keys: list[RSAKey]) -> None:
        self.keys = keys
        config = {
            "issuer": self.issuer, "port": self.port, "api_audience": AUDIENCE,
            "keys": {"keys": [k.as_dict(private=True) for k in keys]},
            "accounts": ACCOUNTS,
            "clients": [
                {"client_id": "inferd", "token_endpoint_auth_method": "none",
                 "redirect_uris": [self.redirect], "grant_types": ["authorization_code"],
                 "response_types": ["code"]},
                {"client_id": CLI_CLIENT, "token_endpoint_auth_method": "none",
                 "redirect_uris": [CLI_REDIRECT], "grant_types": ["authorization_code"],
                 "response_types": ["code"]},
            ],
        }
        path = self.workdir / "provider.json"
        path.write_text(json.dumps(config))
        log = (self.workdir / "provider.log").open("a")
        self.proc = subprocess.Popen(
            ["node", str(ROOT / "tests" / "e2e" / "oidc" / "provider.mjs"), str(path)],
            env={**os.environ, "OIDC_PROVIDER_DIR": str(OIDC_DIR)}, stdout=subprocess.PIPE,
            stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready <port>", or "" when it exited
        assert line.startswith("ready"), (self.workdir / "provider.log").read_text()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def restart(self, keys: list[RSAKey]) -> None:
        self.stop()
        self.start(keys)

    def token(self, login: str, resource: str | None = None) -> str:
        """An access token of ``login``, through the provider's own login and consent pages
        (the code flow with PKCE, as the client ``CLI_CLIENT``)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {"client_id": CLI_CLIENT, "response_type": "code",
                  "scope": "openid profile groups api", "redirect_uri": CLI_REDIRECT,
                  "state": "s", "nonce": "n", "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        if resource:
            params["resource"] = resource
        with httpx.Client(base_url=self.issuer, timeout=30) as client:
            answer = client.get("/auth", params=params)
            code = _through_pages(client, answer, login)
            form = {"grant_type": "authorization_code", "code": code,
                    "redirect_uri": CLI_REDIRECT, "code_verifier": verifier,
                    "client_id": CLI_CLIENT}
            if resource:
                form["resource"] = resource
            tokens = client.post("/token", data=form)
            assert tokens.status_code == 200, tokens.text
            return str(tokens.json()["access_token"])


def _through_pages(client: httpx.Client, answer: httpx.Response, login: str) -> str:
    """Follows the provider's redirects, filling its login and consent forms, until it
    redirects to ``CLI_REDIRECT``: the code it carries."""
    for _ in range(20):
        if answer.is_redirect:
            location = urljoin(str(answer.url), answer.headers["location"])
            if location.startswith(CLI_REDIRECT):
                query = parse_qs(urlparse(location).query)
                assert "code" in query, location
                return query["code"][0]
            answer = client.get(location)
            continue
        assert answer.status_code == 200, answer.text
        action = urljoin(str(answer.url), re.search(r'action="([^"]+)"', answer.text)[1])
        if 'name="login"' in answer.text:
            answer = client.post(action, data={"prompt": "login", "login": login,
                                               "password": "any"})
        else:
            answer = client.post(action, data={"prompt": "consent"})
    raise AssertionError("the provider never redirected back")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    made = Provider(tmp_path_factory.mktemp("oidc"), free_port(), free_port())
    made.start([_key("key-1")])
    yield made
    made.stop()


@pytest.fixture(scope="module")
def server(provider: Provider, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[InferdProcess]:
    port = provider.inferd_port
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
           "INFERD_OIDC_ISSUER": provider.issuer, "INFERD_OIDC_CLIENT_ID": "inferd",
           "INFERD_OIDC_AUDIENCE": AUDIENCE,
           "INFERD_OIDC_REDIRECT_BASE_URL": f"http://127.0.0.1:{port}",
           "INFERD_OIDC_SCOPES": "openid profile email groups api",
           # an unknown key id fetches the provider's keys again at most once a second
           "INFERD_OIDC_JWKS_REFRESH_SECONDS": "1"}
    with InferdProcess(tmp_path_factory.mktemp("sso"), "--no-bundled", port=port,
                       env=env) as process:
        admin = _admin(process)
        for team in ("ml", "readers"):
            assert admin.post("/admin/v1/teams", json={"name": team}).status_code == 201
        rules = {"rules": [
            {"group": "ml-engineers", "team": "ml", "role": "member"},
            {"group": "ml-readers", "team": "ml", "role": "viewer"},
            {"group": "ml-readers", "team": "readers"},
            {"group": "inferd-admins", "installation_role": "admin"},
        ]}
        answer = admin.put("/admin/v1/sso/rules", json=rules)
        assert answer.status_code == 200, answer.text
        assert answer.json()["rules"][0] == {"group": "ml-engineers", "team": "ml",
                                             "role": "member"}
        yield process


def _admin(server: InferdProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60,
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def _user(server: InferdProcess, name: str) -> dict[str, Any]:
    users = _admin(server).get("/admin/v1/users", params={"search": name}).json()["data"]
    return next(u for u in users if u["name"] == name)


def _members(server: InferdProcess, team: str) -> dict[str, str]:
    admin = _admin(server)
    team_id = next(t["id"] for t in admin.get("/admin/v1/teams").json()["data"]
                   if t["name"] == team)
    members = admin.get(f"/admin/v1/teams/{team_id}/members").json()["data"]
    return {m["name"]: m["role"] for m in members}


def _events(server: InferdProcess, action: str) -> list[dict[str, Any]]:
    answer = _admin(server).get("/admin/v1/audit", params={"action": action})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def _signed(key: RSAKey, claims: dict[str, Any]) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, claims, key)


@pytest.mark.skipif(not HAVE_BROWSER and not REQUIRED,
                    reason="Debian's chromium and chromium-driver are not installed")
def test_chromium_signs_in_through_the_provider(server: InferdProcess, provider: Provider,
                                                tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = chromium(tmp_path / "chromium", 1280, 900)
    try:
        d.get(server.url + "/ui/#home")
        wait(d, lambda d: d.find_element(By.ID, "sso").is_displayed())
        if AXE.exists() or REQUIRED:  # the log-in with its SSO button, measured
            assert not axe(d, "log in with single sign-on")
        d.find_element(By.ID, "sso-login").click()
        # the provider's login page, then its consent page
        wait(d, lambda d: d.current_url.startswith(provider.issuer)
             and d.find_elements(By.NAME, "login"))
        d.find_element(By.NAME, "login").send_keys("alice")
        d.find_element(By.NAME, "password").send_keys("any password")
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(d, lambda d: d.current_url.startswith(server.url)
             or "Continue" in d.find_element(By.TAG_NAME, "body").text)
        if d.current_url.startswith(provider.issuer):
            d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(d, lambda d: d.current_url.startswith(server.url + "/ui/")
             and "signed in as alice" in d.find_element(By.ID, "who").text)
        assert "admin key" in d.find_element(By.ID, "who").text
        assert d.find_element(By.ID, "logout").is_displayed()
        # the key of the session is in the tab; it was handed over once
        assert d.execute_script("return sessionStorage.getItem('inferd.key')")
        assert d.execute_script(
            "return fetch('/ui/sso/session', {method: 'POST'}).then(r => r.status)") == 401
        assert not [c for c in d.get_cookies() if c["name"].startswith("inferd_")]
        errors = [e for e in console_errors(d) if "Failed to load resource" not in e]
        assert not errors, errors
        # signing out deletes the session's key
        key = d.execute_script("return sessionStorage.getItem('inferd.key')")
        d.find_element(By.ID, "logout").click()
        wait(d, lambda d: d.find_element(By.ID, "sso").is_displayed())
    finally:
        d.quit()
    with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as client, \
            pytest.raises(openai.AuthenticationError):
        client.models.list()
    user = _user(server, "alice")
    assert user["email"] == "alice@example.org" and user["role"] == "admin"
    assert _members(server, "ml")["alice"] == "member"
    assert "alice" not in _members(server, "readers")
    created = [e for e in _events(server, "sso.user.create") if e["object_id"] == str(user["id"])]
    assert created and created[0]["after"]["sso_subject"] == "alice"
    logins = [e for e in _events(server, "sso.login") if e["after"]["subject"] == "alice"]
    assert logins and logins[0]["after"]["groups"] == ["ml-engineers", "inferd-admins"]
    assert logins[0]["client_address"] == "127.0.0.1"


def _sign_in(server: InferdProcess, provider: Provider, login: str,
             status: int = 302) -> httpx.Client:
    """Signs ``login`` in through inferd's own login routes (no browser): the client holds
    the session's handover cookie after the callback (which answers ``status``)."""
    browser = httpx.Client(timeout=30)
    answer = browser.get(server.url + "/ui/sso/login")
    assert answer.status_code == 302, answer.text
    assert "code_challenge_method=S256" in answer.headers["location"]
    for _ in range(20):
        location = urljoin(str(answer.url), answer.headers["location"])
        if location.startswith(server.url + "/ui/sso/callback"):
            answer = browser.get(location)
            assert answer.status_code == status, answer.text
            if status == 302:
                assert answer.headers["location"] == "/ui/"
            else:
                assert answer.json()["error"]["message"]
            return browser
        answer = browser.get(location)
        while not answer.is_redirect:
            action = urljoin(str(answer.url), re.search(r'action="([^"]+)"', answer.text)[1])
            data = ({"prompt": "login", "login": login, "password": "x"}
                    if 'name="login"' in answer.text else {"prompt": "consent"})
            answer = browser.post(action, data=data)
    raise AssertionError("the login never came back to inferd")


def test_the_rules_apply_at_each_login(server: InferdProcess, provider: Provider) -> None:
    browser = _sign_in(server, provider, "bob")
    handed = browser.post(server.url + "/ui/sso/session")
    assert handed.status_code == 200, handed.text
    key = handed.json()["key"]
    assert handed.json()["user"] == "bob"
    # handed over once
    assert browser.post(server.url + "/ui/sso/session").status_code == 401
    me = httpx.post(server.url + "/ui/session", headers={"Authorization": f"Bearer {key}"})
    assert me.json()["scope"] == "user" and me.json()["user"] == "bob" and me.json()["sso"]
    assert _members(server, "ml")["bob"] == "viewer"
    assert _members(server, "readers")["bob"] == "member"
    # an admin's rule change applies at bob's next login: the readers team now goes to
    # another group, so bob's membership there is removed
    admin = _admin(server)
    rules = admin.get("/admin/v1/sso/rules").json()
    for rule in rules["rules"]:
        if rule.get("team") == "readers":
            rule["group"] = "auditors"
    rules.pop("object")
    assert admin.put("/admin/v1/sso/rules", json=rules).status_code == 200
    assert _events(server, "sso.rules.set")
    _sign_in(server, provider, "bob")
    assert "bob" not in _members(server, "readers")
    assert _members(server, "ml")["bob"] == "viewer"
    # rules naming a team that does not exist are refused
    bad = admin.put("/admin/v1/sso/rules", json={"rules": [{"group": "g", "team": "nope"}]})
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "team_not_found"
    bad = admin.put("/admin/v1/sso/rules", json={"rules": [{"group": "g"}]})
    assert bad.status_code == 400 and "error" in bad.json()


def test_access_tokens_act_as_their_user(server: InferdProcess, provider: Provider) -> None:
    _sign_in(server, provider, "alice")  # the user exists once signed in
    token = provider.token("alice")
    with openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0,
                       timeout=60) as client:
        assert [m.id for m in client.models.list().data] == ["echo"]
        answer = client.chat.completions.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    me = httpx.post(server.url + "/ui/session", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["user"] == "alice" and me.json()["scope"] == "admin"
    # a key-shaped bearer works as before
    keyed = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert keyed.status_code == 200

    def refused(bearer: str) -> dict[str, Any]:
        answer = httpx.get(server.url + "/v1/models",
                           headers={"Authorization": f"Bearer {bearer}"})
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == 'Bearer realm="inferd"'
        error: dict[str, Any] = answer.json()["error"]
        assert error["type"] == "authentication_error" and error["message"]
        return error

    key = provider.keys[0]
    now = int(time.time())
    claims = {"iss": provider.issuer, "sub": "alice", "aud": AUDIENCE, "iat": now - 7200,
              "exp": now - 3600, "scope": "api"}
    assert refused(_signed(key, claims))["code"] == "token_expired"
    # forged: signed with another key under the provider's key id
    forged = _key(key.kid or "")
    assert refused(_signed(forged, {**claims, "exp": now + 600}))["code"] == "invalid_token"
    # a token for another resource server
    other = provider.token("alice", resource="urn:other:api")
    assert "not meant for inferd" in refused(other)["message"]
    # a token altered after it was signed
    assert refused(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    # a valid token of a subject that never signed in
    stranger = _signed(key, {**claims, "sub": "carol", "exp": now + 600})
    assert refused(stranger)["code"] == "sso_user_unknown"


def test_a_token_signed_with_a_rotated_key_is_accepted(server: InferdProcess,
                                                       provider: Provider) -> None:
    _sign_in(server, provider, "alice")
    assert httpx.get(server.url + "/v1/models", headers={
        "Authorization": f"Bearer {provider.token('alice')}"}).status_code == 200
    old = provider.keys[0]
    provider.restart([_key("key-2"), old])  # the new key signs; the old one still verifies
    token = provider.token("alice")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["kid"] == "key-2"

    def accepted(_: Any = None) -> bool:
        return httpx.get(server.url + "/v1/models", headers={
            "Authorization": f"Bearer {token}"}).status_code == 200

    # inferd fetches the provider's keys again for the unknown key id (at most once a second)
    deadline = time.monotonic() + 30
    while not accepted():
        assert time.monotonic() < deadline, "the token of the new key was never accepted"
        time.sleep(0.2)


def test_a_failed_login_is_audited(server: InferdProcess, provider: Provider) -> None:
    # a callback without the login's cookie (a forged or replayed redirect)
    answer = httpx.get(server.url + "/ui/sso/callback", params={"code": "x", "state": "y"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "sso_login_failed"
    # the provider's refusal
    answer = httpx.get(server.url + "/ui/sso/callback",
                       params={"error": "access_denied", "state": "y"})
    assert answer.status_code == 401
    reasons = [e["after"]["reason"] for e in _events(server, "sso.login_failed")]
    assert any("access_denied" in r for r in reasons), reasons
    assert any("No login is in progress" in r for r in reasons), reasons
    # a login whose state does not match its cookie's
    browser = httpx.Client(timeout=30)
    assert browser.get(server.url + "/ui/sso/login").status_code == 302
    answer = browser.get(server.url + "/ui/sso/callback", params={"code": "x", "state": "z"})
    assert answer.status_code == 401
    reasons = [e["after"]["reason"] for e in _events(server, "sso.login_failed")]
    assert any("state does not match" in r for r in reasons), reasons
    failed = _events(server, "sso.login_failed")[0]
    assert failed["client_address"] == "127.0.0.1"


def test_unknown_key_ids_fetch_the_keys_at_most_once_per_interval(provider: Provider) -> None:
    """Tokens with made-up key ids: one fetch of the provider's keys for all of them within
    ``oidc_jwks_refresh_seconds`` (the clock is the client's own, moved by the test)."""
    import asyncio

    from inferd.auth.oidc import InvalidToken, OidcClient
    from inferd.settings import Settings

    now = [1000.0]
    settings = Settings(oidc_issuer=provider.issuer, oidc_client_id="inferd",
                        oidc_audience=AUDIENCE, oidc_jwks_refresh_seconds=60)
    claims = {"iss": provider.issuer, "sub": "alice", "aud": AUDIENCE,
              "exp": int(time.time()) + 600}

    async def run() -> list[int]:
        fetches = []
        async with httpx.AsyncClient(timeout=30) as http:
            client = OidcClient(settings.sso, http, clock=lambda: now[0])
            good = _signed(provider.keys[0], claims)
            assert (await client.verify(good, audience=AUDIENCE))["sub"] == "alice"
            fetches.append(client.key_fetches)
            forged = [_signed(_key(f"made-up-{i}"), claims) for i in range(3)]
            now[0] += 61  # the keys were fetched a while ago: an unknown key id fetches them
            for _ in range(5):
                results = await asyncio.gather(
                    *(client.verify(t, audience=AUDIENCE) for t in forged),
                    return_exceptions=True)
                assert all(isinstance(r, InvalidToken) for r in results), results
            fetches.append(client.key_fetches)
            now[0] += 61  # past the interval: one more fetch, for all of them again
            await asyncio.gather(*(client.verify(t, audience=AUDIENCE) for t in forged),
                                 return_exceptions=True)
            fetches.append(client.key_fetches)
        return fetches

    assert asyncio.run(run()) == [1, 2, 3]


def test_a_disabled_user_can_neither_sign_in_nor_use_tokens(server: InferdProcess,
                                                             provider: Provider) -> None:
    _sign_in(server, provider, "bob")
    token = provider.token("bob")
    assert httpx.get(server.url + "/v1/models",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200
    admin = _admin(server)
    bob = _user(server, "bob")
    assert admin.patch(f"/admin/v1/users/{bob['id']}", json={"disabled": True}).is_success
    try:
        refused = httpx.get(server.url + "/v1/models",
                            headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "user_disabled"
        _sign_in(server, provider, "bob", status=401)
        failed = [e for e in _events(server, "sso.login_failed")
                  if e["after"]["subject"] == "bob"]
        assert failed and "disabled" in failed[0]["after"]["reason"]
    finally:
        admin.patch(f"/admin/v1/users/{bob['id']}", json={"disabled": False})
