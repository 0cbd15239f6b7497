"""SCIM 2.0 provisioning end to end: ``inferd serve`` as a subprocess, checked by
``scim2-tester`` (RFC 7643/7644 conformance, with ``scim2-client`` as the client) and by
explicit requests: a provisioned user's key works and is refused at once when the provider
deactivates them, filters, paging, errors, and who may call the SCIM routes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest

from tests.helpers import ROOT, InferdProcess

ADMIN_KEY = "sk-test-admin-for-scim-0123456789"
MODELS = [{"name": "echo", "kind": "echo"}]
SCIM = "application/scim+json"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_MODELS": json.dumps(MODELS)}
    with InferdProcess(tmp_path_factory.mktemp("scim"), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def scim_key(admin: httpx.Client) -> str:
    created = ok(admin.post("/admin/v1/keys", json={"name": "idp", "scope": "scim"}), 201)
    assert created["scope"] == "scim"
    return str(created["key"])


@pytest.fixture(scope="module")
def scim(server: InferdProcess, scim_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/scim/v2/", timeout=60,
                      headers={"Authorization": f"Bearer {scim_key}",
                               "Content-Type": SCIM}) as client:
        yield client


def scim_error(response: httpx.Response, status: int, scim_type: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(SCIM)
    body = response.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status), body
    assert body.get("scimType") == scim_type, body


def new_user(scim: httpx.Client, user_name: str, **attrs: Any) -> dict[str, Any]:
    created: dict[str, Any] = ok(scim.post("Users", json={"schemas": [USER], "userName": user_name,
                                                          **attrs}), 201)
    return created


# -- conformance -------------------------------------------------------------------------------
# The checks scim2-tester may skip, each with why it does not apply: searching several resource
# types at once (``POST /.search``) is optional and answered 501, which the checker honours.
MAY_SKIP = {"search_with_attributes"}


def test_scim2_tester_checks_pass(server: InferdProcess, scim_key: str) -> None:
    # imported here: scim2-client builds its models at import, seconds of CPU that every
    # collection of the suite (each xdist worker's) would spend otherwise
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    with httpx2.Client(base_url=server.url + "/scim/v2", timeout=60,
                       headers={"Authorization": f"Bearer {scim_key}"}) as http:
        results = check_server(SyncSCIMClient(http))
    titles = {r.title for r in results}
    # discovery, every CRUD step and every PATCH operation of both resource types ran
    for title in ("service_provider_config_endpoint", "service_provider_config_endpoint_methods",
                  "query_all_resource_types", "query_resource_type_by_id",
                  "access_invalid_resource_type", "resource_types_schema_validation",
                  "query_all_schemas", "access_schema_by_id", "access_invalid_schema",
                  "schemas_endpoint_methods", "random_url",
                  "object_creation", "object_query", "object_query_without_id",
                  "object_query_with_attributes", "object_list_with_attributes",
                  "object_replacement", "object_deletion", "check_add_attribute",
                  "check_remove_attribute", "check_replace_attribute"):
        assert title in titles, (title, sorted(titles))
    assert {r.resource_type for r in results} >= {"User", "Group"}
    failed = [r for r in results if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    assert not failed, "\n".join(f"{r.resource_type} {r.title}: {r.status.name} {r.reason}"
                                 for r in failed)
    skipped = {r.title for r in results if r.status is Status.SKIPPED}
    assert skipped <= MAY_SKIP, skipped
    assert len([r for r in results if r.status is Status.SUCCESS]) >= 60


# -- provisioning and deprovisioning ---------------------------------------------------------
def test_a_provisioned_users_key_is_refused_at_once_when_deactivated(
        server: InferdProcess, admin: httpx.Client, scim: httpx.Client) -> None:
    user = new_user(scim, "alice@example.com", externalId="00u-alice",
                    name={"givenName": "Alice", "familyName": "Liddell"},
                    emails=[{"value": "alice@example.com", "type": "work", "primary": True}],
                    displayName="Alice Liddell", active=True)
    assert user["active"] is True and user["meta"]["resourceType"] == "User"
    assert user["meta"]["location"].endswith(f"/scim/v2/Users/{user['id']}")
    group = ok(scim.post("Groups", json={"schemas": [GROUP], "displayName": "research",
                                         "externalId": "00g-research",
                                         "members": [{"value": user["id"]}]}), 201)
    assert [m["value"] for m in group["members"]] == [user["id"]]
    # inferd's own view: a user and a team with that member
    shown = ok(admin.get(f"/admin/v1/users/{user['id']}"))
    assert shown["name"] == "alice@example.com" and shown["email"] == "alice@example.com"
    assert shown["external_id"] == "00u-alice" and shown["deprovisioned_at"] is None
    assert ok(admin.get(f"/admin/v1/teams/{group['id']}"))["external_id"] == "00g-research"
    members = ok(admin.get(f"/admin/v1/teams/{group['id']}/members"))["data"]
    assert [(m["user_id"], m["role"]) for m in members] == [(int(user["id"]), "member")]
    key = ok(admin.post("/admin/v1/keys", json={"name": "alice-key", "user_id": int(user["id"]),
                                                "team_id": int(group["id"])}), 201)["key"]
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as alice:
        assert alice.post("/v1/chat/completions", json=CHAT).status_code == 200
        off = ok(scim.patch(f"Users/{user['id']}", json={"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "active", "value": False}]}))
        assert off["active"] is False
        refused = alice.post("/v1/chat/completions", json=CHAT)  # at once: no waiting
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "user_disabled"
        # Entra ID sends booleans as strings, and a PatchOp without a path
        on = ok(scim.patch(f"Users/{user['id']}", json={"schemas": [PATCH], "Operations": [
            {"op": "Replace", "value": {"active": "True"}}]}))
        assert on["active"] is True
        assert alice.post("/v1/chat/completions", json=CHAT).status_code == 200
        # she holds a key of the team: she does not leave it, and nothing else changes either
        scim_error(scim.put(f"Groups/{group['id']}", json={
            "schemas": [GROUP], "displayName": "renamed", "members": []}), 409)
        scim_error(scim.patch(f"Groups/{group['id']}", json={"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "displayName", "value": "renamed"},
            {"op": "remove", "path": "members"}]}), 409)
        kept = ok(scim.get(f"Groups/{group['id']}"))
        assert kept["displayName"] == "research" and len(kept["members"]) == 1
        # DELETE deprovisions: the key stops at once; the user, still holding it, leaves SCIM
        assert scim.delete(f"Users/{user['id']}").status_code == 204
        refused = alice.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "user_disabled"
    scim_error(scim.get(f"Users/{user['id']}"), 404)
    assert ok(scim.get(f"Groups/{group['id']}"))["members"] == []
    kept = ok(admin.get(f"/admin/v1/users/{user['id']}"))
    assert kept["disabled"] is True and kept["deprovisioned_at"] is not None
    # every change is audited, with the SCIM key as the actor
    events = ok(admin.get("/admin/v1/audit", params={"object_type": "user",
                                                     "object_id": user["id"]}))["data"]
    actions = {e["action"] for e in events}
    assert {"user.create", "user.disable", "user.enable", "user.deprovision"} <= actions
    assert {e["actor"]["scope"] for e in events} == {"scim"}


def test_a_user_without_keys_is_deleted_and_groups_change_members(
        admin: httpx.Client, scim: httpx.Client) -> None:
    bob, carol = new_user(scim, "bob"), new_user(scim, "carol")
    group = ok(scim.post("Groups", json={"schemas": [GROUP], "displayName": "ops"}), 201)
    assert group["members"] == []
    path = f"Groups/{group['id']}"
    added = ok(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": bob["id"]},
                                                   {"value": carol["id"]}]}]}))
    assert sorted(m["value"] for m in added["members"]) == sorted([bob["id"], carol["id"]])
    removed = ok(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": f'members[value eq "{bob["id"]}"]'}]}))
    assert [m["value"] for m in removed["members"]] == [carol["id"]]
    renamed = ok(scim.put(path, json={"schemas": [GROUP], "displayName": "operations",
                                      "members": [{"value": bob["id"]}]}))
    assert renamed["displayName"] == "operations"
    assert [m["value"] for m in renamed["members"]] == [bob["id"]]
    assert ok(admin.get(f"/admin/v1/teams/{group['id']}"))["name"] == "operations"
    assert scim.delete(f"Users/{carol['id']}").status_code == 204
    assert admin.get(f"/admin/v1/users/{carol['id']}").status_code == 404
    assert scim.delete(path).status_code == 204
    scim_error(scim.get(path), 404)


def test_etags_and_if_match(scim: httpx.Client) -> None:
    user = new_user(scim, "dave", displayName="Dave")
    got = scim.get(f"Users/{user['id']}")
    assert got.headers["etag"] == user["meta"]["version"] == got.json()["meta"]["version"]
    changed = ok(scim.put(f"Users/{user['id']}", headers={"If-Match": got.headers["etag"]},
                          json={"schemas": [USER], "userName": "dave", "displayName": "D."}))
    assert changed["meta"]["version"] != user["meta"]["version"]
    scim_error(scim.put(f"Users/{user['id']}", headers={"If-Match": got.headers["etag"]},
                        json={"schemas": [USER], "userName": "dave"}), 412)


# -- lists -------------------------------------------------------------------------------------
def test_filters_and_paging(scim: httpx.Client) -> None:
    made = [new_user(scim, f"page-{i}", externalId=f"ext-page-{i}", displayName=f"Page {i}")
            for i in range(5)]
    ids = [u["id"] for u in made]
    found = ok(scim.get("Users", params={"filter": 'userName eq "PAGE-3"'}))
    assert [u["id"] for u in found["Resources"]] == [ids[3]] and found["totalResults"] == 1
    found = ok(scim.get("Users", params={"filter": 'externalId eq "ext-page-1"'}))
    assert [u["id"] for u in found["Resources"]] == [ids[1]]
    found = ok(scim.get("Users", params={"filter": 'displayName eq "page 4"'}))
    assert [u["id"] for u in found["Resources"]] == [ids[4]]
    assert ok(scim.get("Users", params={"filter": 'userName eq "nobody"'}))["totalResults"] == 0
    group = ok(scim.post("Groups", json={"schemas": [GROUP], "displayName": "Paging",
                                         "externalId": "ext-paging"}), 201)
    found = ok(scim.get("Groups", params={"filter": 'displayName eq "paging"'}))
    assert [g["id"] for g in found["Resources"]] == [group["id"]]
    found = ok(scim.get("Groups", params={"filter": 'externalId eq "ext-paging"'}))
    assert [g["id"] for g in found["Resources"]] == [group["id"]]
    for bad in ('userName co "page"', 'userName eq "a" and active eq true', "emails eq \"x\"",
                "userName eq page", 'name.givenName eq "x"', 'userName eq "\\ud800"',
                'userName eq "a\\u0000"'):
        scim_error(scim.get("Users", params={"filter": bad}), 400, "invalidFilter")
    scim_error(scim.get("Groups", params={"filter": 'members eq "1"'}), 400, "invalidFilter")
    # pages of two from the second of the five
    total = ok(scim.get("Users", params={"count": 0}))
    assert total["Resources"] == [] and total["totalResults"] >= 5
    every = ok(scim.get("Users", params={"count": 1000}))["Resources"]
    start = [u["id"] for u in every].index(ids[1]) + 1
    page = ok(scim.get("Users", params={"startIndex": start, "count": 2}))
    assert [u["id"] for u in page["Resources"]] == ids[1:3]
    assert page["startIndex"] == start and page["itemsPerPage"] == 2
    assert page["totalResults"] == total["totalResults"]
    only = ok(scim.get("Users", params={"filter": f'id eq "{ids[0]}"',
                                        "attributes": "userName"}))["Resources"][0]
    assert set(only) == {"schemas", "id", "userName"}
    scim_error(scim.get("Users", params={"count": "many"}), 400, "invalidValue")


# -- bad input -------------------------------------------------------------------------------
def test_bad_bodies_get_scim_errors(scim: httpx.Client) -> None:
    scim_error(scim.post("Users", content=b"{not json"), 400, "invalidSyntax")
    scim_error(scim.post("Users", json=["a list"]), 400, "invalidValue")
    scim_error(scim.post("Users", json={"userName": "no-schemas"}), 400, "invalidSyntax")
    scim_error(scim.post("Users", json={"schemas": [USER]}), 400, "invalidValue")
    scim_error(scim.post("Users", json={"schemas": [USER], "userName": "  "}), 400,
               "invalidValue")
    scim_error(scim.post("Users", json={"schemas": [USER], "userName": "x" * 192}), 400,
               "invalidValue")
    scim_error(scim.post("Users", json={"schemas": [USER], "userName": "e",
                                        "active": "maybe"}), 400, "invalidValue")
    scim_error(scim.post("Users", json={"schemas": [USER], "userName": "e",
                                        "emails": [{"value": 5}]}), 400, "invalidValue")
    user = new_user(scim, "erin", externalId="ext-erin")
    scim_error(scim.post("Users", json={"schemas": [USER], "userName": "ERIN"}), 409,
               "uniqueness")
    scim_error(scim.post("Users", json={"schemas": [USER], "userName": "erin2",
                                        "externalId": "ext-erin"}), 409, "uniqueness")
    path = f"Users/{user['id']}"
    scim_error(scim.patch(path, json={"Operations": []}), 400, "invalidSyntax")
    scim_error(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "move", "path": "active"}]}), 400, "invalidSyntax")
    scim_error(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "remove"}]}), 400, "noTarget")
    scim_error(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "id", "value": "7"}]}), 400, "mutability")
    scim_error(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "password", "value": "x"}]}), 400, "invalidPath")
    scim_error(scim.patch(path, json={"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": 3}]}), 400, "invalidValue")
    scim_error(scim.post("Groups", json={"schemas": [GROUP], "displayName": "g",
                                         "members": [{"value": "999999"}]}), 400,
               "invalidValue")
    scim_error(scim.post("Groups", json={"schemas": [GROUP], "displayName": "g",
                                         "members": [{"value": "not-an-id"}]}), 400,
               "invalidValue")
    for missing in ("Users/999999", "Users/abc", "Groups/999999", "Nothing",
                    "Schemas/urn:nothing", "ResourceTypes/Nothing"):
        scim_error(scim.get(missing), 404)
    scim_error(scim.delete("Users/999999"), 404)
    scim_error(scim.post("ServiceProviderConfig", json={}), 405)
    scim_error(scim.post(".search", json={"schemas": [
        "urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}), 501)


def test_no_patch_operation_is_a_server_error(scim: httpx.Client) -> None:
    """Every operation on every kind of path with every kind of value is answered 200, or a
    SCIM error 400 or 409 — never 500."""
    user = new_user(scim, "fuzzed", name={"givenName": "F"}, emails=[{"value": "f@x.org"}])
    group = ok(scim.post("Groups", json={"schemas": [GROUP], "displayName": "fuzzed",
                                         "members": [{"value": user["id"]}]}), 201)
    values = [None, 1, "x", True, [], {}, [1], [{}], {"a": 1}, [{"value": 1}], "False",
              10**30, {"value": "x"}, [{"value": user["id"]}]]
    paths = [None, "", "active", "name", "name.givenName", "emails", 'emails[type eq "w"]',
             'emails[type eq "w"].value', "members", f'members[value eq "{user["id"]}"]',
             "userName", "displayName", "externalId", "x[", "name.givenName.x", "id",
             f"{USER}:name.givenName", "emails.value"]
    answered: set[int] = set()
    for path, value, op in itertools.product(paths, values, ("add", "replace", "remove")):
        operation = {"op": op, **({} if path is None else {"path": path}),
                     **({} if value is None else {"value": value})}
        for target in (f"Users/{user['id']}", f"Groups/{group['id']}"):
            response = scim.patch(target, json={"schemas": [PATCH], "Operations": [operation]})
            assert response.status_code in (200, 400, 409), (target, operation, response.text)
            if response.status_code != 200:
                scim_error(response, response.status_code, response.json().get("scimType"))
            answered.add(response.status_code)
    assert answered == {200, 400}


# -- who may call ----------------------------------------------------------------------------
def test_only_scim_and_admin_keys_reach_scim_and_a_scim_key_nothing_else(
        server: InferdProcess, admin: httpx.Client, scim: httpx.Client, scim_key: str) -> None:
    user_key = ok(admin.post("/admin/v1/keys", json={"name": "plain"}), 201)["key"]
    auditor = ok(admin.post("/admin/v1/keys", json={"name": "aud", "scope": "auditor"}),
                 201)["key"]
    for key in (user_key, auditor):
        scim_error(httpx.get(server.url + "/scim/v2/Users",
                             headers={"Authorization": f"Bearer {key}"}), 403)
    scim_error(httpx.get(server.url + "/scim/v2/Users"), 401)
    scim_error(httpx.get(server.url + "/scim/v2/Users",
                         headers={"Authorization": "Bearer sk-inferd-nothing-of-ours"}), 401)
    assert ok(admin.get("/scim/v2/ServiceProviderConfig"))["patch"]["supported"] is True
    auth = {"Authorization": f"Bearer {scim_key}"}
    for method, path, body in (("POST", "/v1/chat/completions", CHAT),
                               ("GET", "/v1/models", None),
                               ("GET", "/admin/v1/users", None),
                               ("POST", "/admin/v1/keys", {"name": "escalate"}),
                               ("POST", "/ui/session", None)):
        refused = httpx.request(method, server.url + path, headers=auth, json=body)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["code"] == "scim_key_not_allowed"
    config = ok(scim.get("ServiceProviderConfig"))
    assert config["bulk"]["supported"] is False and config["filter"]["maxResults"] == 1000


def test_the_cli_creates_a_scim_key(server: InferdProcess) -> None:
    done = subprocess.run([sys.executable, "-m", "inferd", "keys", "create", "--scope", "scim",
                           "--name", "okta"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                                         "INFERD_DATA_DIR": str(server.data_dir)})
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["scope"] == "scim"
    answer = httpx.get(server.url + "/scim/v2/ServiceProviderConfig",
                       headers={"Authorization": f"Bearer {created['key']}"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(SCIM)
