"""SCIM's pure parts: parsing Users and Groups, filters, PatchOps as identity providers send
them (Okta, Entra ID), attribute selection and ETags."""

from __future__ import annotations

from typing import Any

import pytest

from inferd.auth.scim import (
    GROUP,
    GROUP_ATTRIBUTES,
    PATCH_OP,
    USER,
    USER_ATTRIBUTES,
    ScimError,
    apply_patch,
    parse_filter,
    parse_group,
    parse_user,
    project,
    user_columns,
    version,
)

ALICE: dict[str, Any] = {"userName": "alice", "active": True, "externalId": "00u1",
                         "emails": [{"value": "a@example.org", "type": "work",
                                     "primary": True}]}


def patch(resource: dict[str, Any], *operations: dict[str, Any], schema: str = USER,
          names: dict[str, str] = USER_ATTRIBUTES) -> dict[str, Any]:
    return apply_patch(resource, {"schemas": [PATCH_OP], "Operations": list(operations)},
                       schema, names)


def refused(scim_type: str, status: int = 400) -> Any:
    class Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, exc: Any, _tb: Any) -> bool:
            assert isinstance(exc, ScimError), exc
            assert (exc.status, exc.scim_type) == (status, scim_type), exc.message
            return True

    return Check()


def test_a_user_maps_to_columns() -> None:
    attrs = parse_user({"schemas": [USER], "USERNAME": "alice", "active": "False",
                        "name": {"givenName": "Alice", "middleName": "ignored"},
                        "emails": [{"value": "b@x.org"}, {"value": "a@x.org", "primary": True}],
                        "phoneNumbers": [{"value": "ignored"}]})
    assert attrs == {"userName": "alice", "active": False, "name": {"givenName": "Alice"},
                     "emails": [{"value": "b@x.org"}, {"value": "a@x.org", "primary": True}]}
    columns = user_columns(attrs)
    assert columns["email"] == "a@x.org" and columns["disabled"] is True
    assert columns["scim"]["active"] is True  # set by the provider: shown
    # attributes under their schema's URN
    assert parse_user({f"{USER}:userName": "bob"})["userName"] == "bob"


@pytest.mark.parametrize("body", [
    {"userName": ""}, {"userName": 5}, {"userName": "a\x00b"}, {"userName": "x" * 192},
    {"userName": "a", "active": 1}, {"userName": "a", "emails": "a@x.org"},
    {"userName": "a", "emails": [{"value": "a", "primary": True},
                                 {"value": "b", "primary": True}]},
    {"userName": "a", "name": "Alice"}, {"userName": "a", "externalId": ["x"]},
])
def test_bad_users_are_invalid_values(body: dict[str, Any]) -> None:
    with refused("invalidValue"):
        parse_user(body)


def test_group_members_are_user_ids() -> None:
    group = parse_group({"displayName": "ops", "members": [{"value": "3"}, {"value": "1"},
                                                           {"value": "3"}]})
    assert group["members"] == [1, 3]
    for member in ({"value": "x"}, {"value": 3}, {"display": "a"}, "3"):
        with refused("invalidValue"):
            parse_group({"displayName": "ops", "members": [member]})


@pytest.mark.parametrize(("text", "expected"), [
    ('userName eq "alice"', ("name", "alice", False)),
    ('USERNAME EQ "a\\"b"', ("name", 'a"b', False)),
    ('externalId eq "00u1"', ("external_id", "00u1", True)),
    (f'{USER}:displayName eq "A"', ("display_name", "A", False)),
    ('id eq "7"', ("id", "7", True)),
])
def test_filters(text: str, expected: tuple[str, str, bool]) -> None:
    assert parse_filter(text, "User") == expected


@pytest.mark.parametrize("text", [
    'userName sw "a"', 'userName eq "a" or userName eq "b"', "active eq true",
    'emails[type eq "work"]', 'members eq "1"', "userName eq", "(userName eq \"a\")",
])
def test_other_filters_are_refused(text: str) -> None:
    with refused("invalidFilter"):
        parse_filter(text, "User")
    assert parse_filter("  ", "User") is None


def test_patch_like_okta_and_entra() -> None:
    # Okta: replace without a path
    assert patch(ALICE, {"op": "replace", "value": {"active": False}})["active"] is False
    # Entra ID: capitalised ops, string booleans, filtered paths, URN paths
    done = patch(ALICE,
                 {"op": "Replace", "path": "active", "value": "False"},
                 {"op": "Add", "path": 'emails[type eq "home"].value', "value": "h@x.org"},
                 {"op": "replace", "path": 'emails[type eq "work"].value', "value": "w@x.org"},
                 {"op": "replace", "path": f"{USER}:displayName", "value": "Alice L"},
                 {"op": "add", "path": "name.familyName", "value": "Liddell"})
    assert done["active"] == "False" and parse_user(done)["active"] is False
    assert done["emails"] == [{"value": "w@x.org", "type": "work", "primary": True},
                              {"type": "home", "value": "h@x.org"}]
    assert done["displayName"] == "Alice L" and done["name"] == {"familyName": "Liddell"}
    removed = patch(done, {"op": "remove", "path": 'emails[type eq "home"]'},
                    {"op": "remove", "path": "externalId"})
    assert "externalId" not in removed and len(removed["emails"]) == 1
    assert ALICE["active"] is True  # the resource given is not changed


def test_patch_group_members() -> None:
    group = {"displayName": "ops", "members": [{"value": "1", "$ref": "/Users/1"}]}
    added = patch(group, {"op": "add", "path": "members",
                          "value": [{"value": "2"}, {"value": "1"}]},
                  schema=GROUP, names=GROUP_ATTRIBUTES)
    assert parse_group(added)["members"] == [1, 2]
    removed = patch(added, {"op": "remove", "path": "members", "value": [{"value": "1"}]},
                    schema=GROUP, names=GROUP_ATTRIBUTES)
    assert parse_group(removed)["members"] == [2]
    emptied = patch(added, {"op": "remove", "path": "members"},
                    schema=GROUP, names=GROUP_ATTRIBUTES)
    assert parse_group(emptied)["members"] == []


@pytest.mark.parametrize(("body", "scim_type"), [
    ({"Operations": [{"op": "add", "path": "active", "value": True}]}, "invalidSyntax"),
    ({"schemas": [PATCH_OP], "Operations": []}, "invalidSyntax"),
    ({"schemas": [PATCH_OP], "Operations": [{"op": "copy"}]}, "invalidSyntax"),
    ({"schemas": [PATCH_OP], "Operations": [{"op": "remove"}]}, "noTarget"),
    ({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "x.y.z", "value": 1}]},
     "invalidPath"),
    ({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "title", "value": 1}]},
     "invalidPath"),
    ({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "meta", "value": {}}]},
     "mutability"),
    ({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active"}]},
     "invalidValue"),
    ({"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": 'emails[type eq "none"]', "value": {"value": "a"}}]},
     "noTarget"),
])
def test_bad_patches(body: dict[str, Any], scim_type: str) -> None:
    with refused(scim_type):
        apply_patch(ALICE, body, USER, USER_ATTRIBUTES)


def test_attributes_and_versions() -> None:
    resource = {"schemas": [USER], "id": "1", "userName": "alice",
                "name": {"givenName": "A", "familyName": "L"}, "active": True,
                "meta": {"resourceType": "User"}}
    assert project(resource, ["userName", "name.givenName"], None) == {
        "schemas": [USER], "id": "1", "userName": "alice", "name": {"givenName": "A"}}
    assert project(resource, None, ["name", "id", "meta"]) == {
        "schemas": [USER], "id": "1", "userName": "alice", "active": True}
    assert version(resource) == version({**resource, "meta": {"other": 1}})
    assert version(resource) != version({**resource, "active": False})
    assert version(resource).startswith('W/"')
