"""SCIM 2.0 provisioning (RFC 7643, RFC 7644): an identity provider creates, changes and
removes inferd's users and teams.

A SCIM ``User`` is an inferd user: ``userName`` is its name, ``externalId`` the provider's id
of it, ``active`` the opposite of ``disabled``, the primary (else the first) of ``emails`` its
email; ``displayName``, ``name`` and ``emails`` are kept as given. A SCIM ``Group`` is a team:
``displayName`` is its name, ``members`` its members (users added by SCIM join as
``member``). Every change goes through ``TeamAdmin``: it is audited (the actor is the key of
the request) and a user made inactive has all their keys refused on every gateway at once.

A ``DELETE`` of a user first disables them (their keys stop at once); a user without keys is
then deleted, one who still holds keys stays disabled and leaves SCIM (``deprovisioned_at``):
their keys keep their records until an admin deletes or moves them.

``ScimService`` parses what the provider sends into the attributes above (``parse_user``,
``parse_group``), answers resources with ``meta`` (``version`` is a weak ETag of the resource's
content), lists with a filter (``attr eq "value"`` on the attributes of ``FILTERS``) and
``startIndex``/``count`` paging, and applies a ``PatchOp`` to the resource as SCIM shows it,
then stores the result like a replacement. Every refusal is a ``ScimError`` with the status
and ``scimType`` RFC 7644 section 3.12 names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Generic, NotRequired, ParamSpec, TypedDict, TypeVar

import orjson

from inferd.auth.teams import TeamAdmin
from inferd.errors import Conflict, InferdError, NotFound
from inferd.jsontypes import JsonObject, JsonValue
from inferd.store.scim import (
    ScimEmail,
    ScimKept,
    ScimName,
    ScimStore,
    ScimTeamRow,
    ScimUserRow,
)
from inferd.store.teams import TeamColumns, UserColumns

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SPC = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
MEDIA_TYPE = "application/scim+json"
# The most resources one page of a list holds (``count`` above it is lowered to it).
MAX_RESULTS = 1000
MAX_OPERATIONS = 100  # operations in one PatchOp
MAX_EMAILS = 100
MAX_MEMBERS = 10_000  # members set at once
NAME_CHARS = 191
EMAIL_CHARS = 320
# Attributes a list's ``filter`` may test for equality, per resource type: SCIM name -> the
# store's column; case-insensitive ones (caseExact false) compare lowercased.
FILTERS: dict[str, dict[str, tuple[str, bool]]] = {
    "User": {"username": ("name", False), "externalid": ("external_id", True),
             "displayname": ("display_name", False), "id": ("id", True)},
    "Group": {"displayname": ("name", False), "externalid": ("external_id", True),
              "id": ("id", True)},
}
FILTER_NAMES = {"User": ("userName", "externalId", "displayName", "id"),
                "Group": ("displayName", "externalId", "id")}
_FILTER = re.compile(r'^\s*([A-Za-z][\w$:.]*)\s+(eq)\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)
_PATH = re.compile(r'^([A-Za-z][\w$]*)(?:\[\s*([A-Za-z][\w$]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\])?'
                   r'(?:\.([A-Za-z][\w$]*))?$', re.I)
# Attribute names as SCIM spells them, by their lowercase form (names are case-insensitive).
USER_ATTRIBUTES = {a.lower(): a for a in ("userName", "name", "displayName", "emails",
                                          "active", "externalId")}
GROUP_ATTRIBUTES = {a.lower(): a for a in ("displayName", "members", "externalId")}
NAME_PARTS = {a.lower(): a for a in ("formatted", "familyName", "givenName")}
EMAIL_PARTS = {a.lower(): a for a in ("value", "type", "primary")}
MEMBER_PARTS = {a.lower(): a for a in ("value", "$ref")}
READ_ONLY = frozenset({"id", "meta", "schemas"})
R = TypeVar("R")


# -- what SCIM sends and answers -----------------------------------------------------------------
class UserAttributes(TypedDict):
    """A User's attributes as ``parse_user`` checked them; absent ones left out."""

    userName: str
    externalId: NotRequired[str]
    displayName: NotRequired[str]
    name: NotRequired[ScimName]
    emails: NotRequired[list[ScimEmail]]
    active: NotRequired[bool]


class GroupAttributes(TypedDict):
    """A Group's attributes as ``parse_group`` checked them: ``members`` as user ids."""

    displayName: str
    externalId: NotRequired[str]
    members: list[int]


class ResourceMeta(TypedDict):
    """A User's or Group's ``meta``; ``version`` is a weak ETag of its content."""

    resourceType: str
    created: str
    lastModified: str
    location: str
    version: str


class DocumentMeta(TypedDict):
    """The ``meta`` of a discovery document."""

    resourceType: str
    location: str


class UserResource(TypedDict):
    """A User as SCIM shows it. ``userName`` and ``meta`` are always there: they are set in
    the order SCIM shows the attributes, after ones that may be missing."""

    schemas: list[str]
    id: str
    externalId: NotRequired[str]
    userName: NotRequired[str]
    name: NotRequired[ScimName]
    displayName: NotRequired[str]
    emails: NotRequired[list[ScimEmail]]
    active: NotRequired[bool]
    meta: NotRequired[ResourceMeta]


# One of a Group's ``members`` (``$ref`` is no Python name: the functional form).
GroupMember = TypedDict("GroupMember", {"value": str, "$ref": str})


class GroupResource(TypedDict):
    """A Group as SCIM shows it (``displayName``, ``members`` and ``meta`` always there, set
    after ``externalId``)."""

    schemas: list[str]
    id: str
    externalId: NotRequired[str]
    displayName: NotRequired[str]
    members: NotRequired[list[GroupMember]]
    meta: NotRequired[ResourceMeta]


class ListResponse(TypedDict, Generic[R]):
    """A page of resources (RFC 7644 3.4.2)."""

    schemas: list[str]
    totalResults: int
    startIndex: int
    itemsPerPage: int
    Resources: list[R]


class ErrorBody(TypedDict):
    """SCIM's ``Error`` (RFC 7644 3.12)."""

    schemas: list[str]
    status: str
    detail: str
    scimType: NotRequired[str]


class Supported(TypedDict):
    supported: bool


class BulkSupport(TypedDict):
    supported: bool
    maxOperations: int
    maxPayloadSize: int


class FilterSupport(TypedDict):
    supported: bool
    maxResults: int


class AuthenticationScheme(TypedDict):
    type: str
    name: str
    primary: bool
    description: str


class ServiceProviderConfig(TypedDict):
    """What the service supports (RFC 7643 section 5)."""

    schemas: list[str]
    patch: Supported
    bulk: BulkSupport
    filter: FilterSupport
    changePassword: Supported
    sort: Supported
    etag: Supported
    authenticationSchemes: list[AuthenticationScheme]
    meta: DocumentMeta


class ResourceType(TypedDict):
    """A resource type inferd serves (RFC 7643 section 6)."""

    schemas: list[str]
    id: str
    name: str
    endpoint: str
    description: str
    schema: str
    meta: DocumentMeta


class ScimError(InferdError):
    """A refusal in SCIM's terms: the HTTP status and the ``scimType`` (or none)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail, code=scim_type)
        self.status = status
        self.scim_type = scim_type


def invalid(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidValue")


def scim_error(exc: InferdError) -> ScimError:
    """Any refusal of inferd as SCIM's: a duplicate name or id is ``uniqueness``, a bad value
    ``invalidValue``; the status stays."""
    if isinstance(exc, ScimError):
        return exc
    if exc.status == 409 and (exc.code or "").endswith("_exists"):
        return ScimError(409, exc.message, "uniqueness")
    if exc.status == 400:
        return ScimError(400, exc.message, "invalidSyntax" if exc.code == "invalid_json"
                         else "invalidValue")
    return ScimError(exc.status, exc.message)


P = ParamSpec("P")
T = TypeVar("T")


def in_scim_terms(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``method`` raising every refusal of inferd as SCIM's (``scim_error``)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except InferdError as exc:
            raise scim_error(exc) from None

    return wrapper


def error_body(exc: ScimError) -> ErrorBody:
    body: ErrorBody = {"schemas": [ERROR], "status": str(exc.status), "detail": exc.message}
    if exc.scim_type:
        body["scimType"] = exc.scim_type
    return body


# -- values ------------------------------------------------------------------------------------
def _text(value: JsonValue, where: str, limit: int = NAME_CHARS, *, blank: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid(f"'{where}' must be a string.")
    if len(value) > limit:
        raise invalid(f"'{where}' has more than {limit} characters.")
    if "\x00" in value:
        raise invalid(f"'{where}' may not hold a NUL character.")
    if not blank and not value.strip():
        raise invalid(f"'{where}' may not be blank.")
    return value


def _optional_text(value: JsonValue, where: str, limit: int = NAME_CHARS) -> str | None:
    return None if value is None else _text(value, where, limit)


def _boolean(value: JsonValue, where: str) -> bool:
    # Some providers send booleans as the strings "True" and "False".
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise invalid(f"'{where}' must be a boolean.")
    return value


def _object(value: JsonValue, where: str) -> JsonObject:
    if not isinstance(value, dict):
        raise invalid(f"'{where}' must be an object.")
    return value


def _known(data: JsonObject, names: dict[str, str]) -> JsonObject:
    """``data`` with its known attribute names spelled as SCIM does; unknown ones left out."""
    return {names[k.lower()]: v for k, v in data.items() if k.lower() in names}


def _strip_urn(data: JsonObject, schema: str) -> JsonObject:
    """Attributes sent under their full name (``urn:...:User:userName``) as short names."""
    out: JsonObject = {}
    for name, value in data.items():
        if name.lower().startswith(schema.lower() + ":"):
            out[name[len(schema) + 1:]] = value
        elif name.lower() == schema.lower() and isinstance(value, dict):
            out.update(value)
        else:
            out[name] = value
    return out


def _check_schemas(data: JsonObject, schema: str) -> None:
    schemas = data.get("schemas")
    if not isinstance(schemas, list) or schema not in schemas:
        raise ScimError(400, f"'schemas' must list {schema}.", "invalidSyntax")


def parse_user(data: JsonValue) -> UserAttributes:
    """The SCIM attributes of a User body (checked), with absent ones left out."""
    body = _strip_urn(_object(data, "body"), USER)
    attrs = _known(body, USER_ATTRIBUTES)
    out: UserAttributes = {"userName": _text(attrs.get("userName"), "userName")}
    if attrs.get("externalId") is not None:
        out["externalId"] = _text(attrs["externalId"], "externalId")
    if attrs.get("displayName") is not None:
        out["displayName"] = _text(attrs["displayName"], "displayName", blank=True)
    if attrs.get("name") is not None:
        name = _name(_object(attrs["name"], "name"))
        if name:
            out["name"] = name
    if attrs.get("emails") is not None:
        out["emails"] = _emails(attrs["emails"])
    if attrs.get("active") is not None:
        out["active"] = _boolean(attrs["active"], "active")
    return out


def _name(value: JsonObject) -> ScimName:
    """The parts of a ``name`` inferd keeps (null ones left out), in the order given."""
    name: ScimName = {}
    for part, item in _known(value, NAME_PARTS).items():
        text = _optional_text(item, f"name.{part}", 255)
        if text is None:
            continue
        if part == "formatted":
            name["formatted"] = text
        elif part == "familyName":
            name["familyName"] = text
        else:
            name["givenName"] = text
    return name


def _emails(value: JsonValue) -> list[ScimEmail]:
    if not isinstance(value, list) or len(value) > MAX_EMAILS:
        raise invalid(f"'emails' must be a list of at most {MAX_EMAILS} objects.")
    emails: list[ScimEmail] = []
    for item in value:
        email = _known(_object(item, "emails"), EMAIL_PARTS)
        checked: ScimEmail = {"value": _text(email.get("value"), "emails.value", EMAIL_CHARS)}
        if email.get("type") is not None:
            checked["type"] = _text(email["type"], "emails.type", 64)
        if email.get("primary") is not None:
            checked["primary"] = _boolean(email["primary"], "emails.primary")
        emails.append(checked)
    if sum(1 for e in emails if e.get("primary")) > 1:
        raise invalid("At most one of 'emails' may be primary.")
    return emails


def parse_group(data: JsonValue) -> GroupAttributes:
    """The SCIM attributes of a Group body (checked): ``members`` as user ids."""
    body = _strip_urn(_object(data, "body"), GROUP)
    attrs = _known(body, GROUP_ATTRIBUTES)
    display_name = _text(attrs.get("displayName"), "displayName")
    external_id = None
    if attrs.get("externalId") is not None:
        external_id = _text(attrs["externalId"], "externalId")
    members = attrs.get("members") or []
    if not isinstance(members, list) or len(members) > MAX_MEMBERS:
        raise invalid(f"'members' must be a list of at most {MAX_MEMBERS} objects.")
    out: GroupAttributes = {"displayName": display_name,
                            "members": sorted({_member_id(m) for m in members})}
    if external_id is not None:
        out["externalId"] = external_id
    return out


def _member_id(item: JsonValue) -> int:
    value = _known(_object(item, "members"), MEMBER_PARTS).get("value")
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or \
            len(value) > 18:
        raise invalid(f"'members.value' must be the id of a User, not {value!r}.")
    return int(value)


def user_columns(attrs: UserAttributes) -> UserColumns:
    """The ``users`` columns of a User's attributes (every one that SCIM sets)."""
    emails = attrs.get("emails") or []
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    kept: ScimKept = {}
    if "name" in attrs:
        kept["name"] = attrs["name"]
    if "emails" in attrs:
        kept["emails"] = attrs["emails"]
    if "active" in attrs:
        # whether the provider set it (absent: the user is active, and SCIM shows no
        # ``active`` until it is set; a disabled user always shows ``active: false``)
        kept["active"] = True
    return {"name": attrs["userName"], "external_id": attrs.get("externalId"),
            "display_name": attrs.get("displayName"),
            "email": None if primary is None else primary["value"],
            "disabled": attrs.get("active") is False, "scim": kept}


# -- PATCH ---------------------------------------------------------------------------------------
def _unquote(text: str) -> str:
    """A filter's quoted value (JSON's escapes); valid text without NUL only."""
    try:
        value = str(json.loads(f'"{text}"'))
        value.encode()
    except ValueError:
        raise ScimError(400, "The filter's value is no valid string.", "invalidFilter") from None
    if "\x00" in value:
        raise ScimError(400, "The filter's value may not hold a NUL character.",
                        "invalidFilter")
    return value


def apply_patch(resource: JsonObject, body: JsonValue, schema: str,
                names: dict[str, str]) -> JsonObject:
    """``resource`` (its attributes, as SCIM shows them) after the operations of the PatchOp
    ``body``; raises ``ScimError`` for an operation that is not valid (RFC 7644 3.5.2)."""
    data = _object(body, "body")
    schemas = data.get("schemas") or []
    if not isinstance(schemas, str | list | dict) or PATCH_OP not in schemas:
        raise ScimError(400, f"'schemas' must list {PATCH_OP}.", "invalidSyntax")
    operations = data.get("Operations", data.get("operations"))
    if not isinstance(operations, list) or not operations or len(operations) > MAX_OPERATIONS:
        raise ScimError(400, f"'Operations' must be a list of 1 to {MAX_OPERATIONS} "
                        "operations.", "invalidSyntax")
    result: JsonObject = json.loads(json.dumps(resource))
    for operation in operations:
        op = _object(operation, "Operations")
        kind = op.get("op")
        if not isinstance(kind, str) or kind.lower() not in ("add", "replace", "remove"):
            raise ScimError(400, "Each operation's 'op' is add, replace or remove.",
                            "invalidSyntax")
        path = op.get("path")
        if path is not None and not isinstance(path, str):
            raise ScimError(400, "'path' must be a string.", "invalidPath")
        _operate(result, kind.lower(), path, op.get("value"), "value" in op, schema, names)
    return result


def _operate(data: JsonObject, kind: str, path: str | None, value: JsonValue,
             has_value: bool, schema: str, names: dict[str, str]) -> None:
    if path is None or not path.strip():
        if kind == "remove":
            raise ScimError(400, "A remove operation needs a 'path'.", "noTarget")
        for name, item in _strip_urn(_object(value, "value"), schema).items():
            _operate(data, kind, name, item, True, schema, names)
        return
    if path.lower().startswith(schema.lower() + ":"):
        path = path[len(schema) + 1:]
    match = _PATH.match(path.strip())
    if match is None:
        raise ScimError(400, f"'{path}' is no attribute path inferd supports.", "invalidPath")
    attr, filter_attr, filter_value, sub = match.groups()
    if attr.lower() in READ_ONLY:
        raise ScimError(400, f"'{attr}' cannot be changed.", "mutability")
    if attr.lower() not in names:
        raise ScimError(400, f"There is no attribute '{attr}'.", "invalidPath")
    name = names[attr.lower()]
    if kind != "remove" and not has_value:
        raise ScimError(400, f"The {kind} operation on '{path}' needs a 'value'.",
                        "invalidValue")
    if filter_attr is not None:
        _operate_filtered(data, kind, name, filter_attr, _unquote(filter_value), sub, value)
    elif sub is not None:
        current = data.get(name)
        if current is None and kind != "remove":
            current = data[name] = {}
        if not isinstance(current, dict):
            raise ScimError(400, f"'{name}' has no sub-attributes.", "invalidPath")
        if kind == "remove":
            _drop(current, sub)
        else:
            current[sub] = value
    else:
        _operate_whole(data, kind, name, value, has_value)


def _operate_whole(data: JsonObject, kind: str, name: str, value: JsonValue,
                   has_value: bool) -> None:
    """An operation on the attribute ``name`` as a whole."""
    current = data.get(name)
    if kind == "remove":
        if isinstance(current, list) and has_value and isinstance(value, list):
            # remove these values of a multi-valued attribute (``members``)
            gone = {str(v.get("value")) for v in value if isinstance(v, dict)}
            data[name] = [v for v in current
                          if not isinstance(v, dict) or str(v.get("value")) not in gone]
        else:
            data.pop(name, None)
    elif kind == "add" and isinstance(current, list):
        data[name] = current + [v for v in (value if isinstance(value, list) else [value])
                                if v not in current]
    elif kind == "add" and isinstance(current, dict) and isinstance(value, dict):
        current.update(value)
    else:
        data[name] = value


def _operate_filtered(data: JsonObject, kind: str, name: str, filter_attr: str,
                      filter_value: str, sub: str | None, value: JsonValue) -> None:
    items = data.get(name)
    if items is None and kind == "add" and sub is not None:
        items = data[name] = []
    if not isinstance(items, list):
        if kind == "remove":
            return
        raise ScimError(400, f"'{name}' is not multi-valued.", "invalidPath")

    def matches(item: JsonObject) -> bool:
        return any(k.lower() == filter_attr.lower() and str(v).lower() == filter_value.lower()
                   for k, v in item.items())

    hits = [item for item in items if isinstance(item, dict) and matches(item)]
    if kind == "remove":
        if sub is None:
            data[name] = [item for item in items
                          if not (isinstance(item, dict) and matches(item))]
        else:
            for item in hits:
                _drop(item, sub)
        return
    if not hits:
        if kind == "replace" and sub is None:
            raise ScimError(400, f"No value of '{name}' matches the filter.", "noTarget")
        added: JsonObject = {filter_attr: filter_value}
        items.append(added)
        hits = [added]
    for item in hits:
        if sub is None:
            item.clear()
            item.update(_object(value, "value"))
        else:
            item[sub] = value


def _drop(data: JsonObject, name: str) -> None:
    for key in [k for k in data if k.lower() == name.lower()]:
        del data[key]


# -- views ---------------------------------------------------------------------------------------
def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def version(resource: UserResource | GroupResource) -> str:
    """A weak ETag of a resource: a hash of its content (``meta`` aside)."""
    content = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f'W/"{digest[:20]}"'


def _meta(resource: UserResource | GroupResource, kind: str, row: ScimUserRow | ScimTeamRow,
          location: str) -> ResourceMeta:
    return {"resourceType": kind, "created": _stamp(row["created_at"]),
            "lastModified": _stamp(row["updated_at"]), "location": location,
            "version": version(resource)}


def user_resource(row: ScimUserRow, base: str) -> UserResource:
    resource: UserResource = {"schemas": [USER], "id": str(row["id"])}
    external_id, display_name, email = row["external_id"], row["display_name"], row["email"]
    if external_id is not None:
        resource["externalId"] = external_id
    resource["userName"] = row["name"]
    kept: ScimKept = row["scim"] or {}
    if kept.get("name"):
        resource["name"] = kept["name"]
    if display_name is not None:
        resource["displayName"] = display_name
    if kept.get("emails"):
        resource["emails"] = kept["emails"]
    elif email:
        resource["emails"] = [{"value": email, "primary": True}]
    if row["disabled"] or row["scim"] is None or kept.get("active"):
        resource["active"] = not row["disabled"]
    resource["meta"] = _meta(resource, "User", row, f"{base}/Users/{row['id']}")
    return resource


def group_resource(row: ScimTeamRow, members: list[int], base: str) -> GroupResource:
    resource: GroupResource = {"schemas": [GROUP], "id": str(row["id"])}
    external_id = row["external_id"]
    if external_id is not None:
        resource["externalId"] = external_id
    resource["displayName"] = row["name"]
    resource["members"] = [{"value": str(m), "$ref": f"{base}/Users/{m}"} for m in members]
    resource["meta"] = _meta(resource, "Group", row, f"{base}/Groups/{row['id']}")
    return resource


def _json(value: object) -> JsonValue:
    """A value of a resource (JSON, typed by the resource's ``TypedDict``) as a JSON value."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    raise TypeError(f"A SCIM resource holds {type(value).__name__}, which is no JSON.")


def attributes_of(resource: UserResource | GroupResource) -> JsonObject:
    """A resource's own attributes (what a PATCH changes)."""
    return {k: _json(v) for k, v in resource.items() if k not in READ_ONLY}


def _selection(paths: list[str]) -> dict[str, set[str] | None]:
    """Attribute paths by their attribute (lowercase): the sub-attributes named, or None for
    the whole attribute."""
    selected: dict[str, set[str] | None] = {}
    for path in paths:
        top, _, sub = path.partition(".")
        top = top.lower()
        subs = selected.get(top, set())
        if sub and subs is not None:
            subs.add(sub.lower())
            selected[top] = subs
        elif not sub:
            selected[top] = None
    return selected


def project(resource: UserResource | GroupResource, attributes: list[str] | None,
            excluded: list[str] | None) -> UserResource | GroupResource | JsonObject:
    """The resource with only ``attributes`` (or without ``excluded``), RFC 7644 3.4.2.5:
    ``id`` and ``schemas`` always stay. Names may name a sub-attribute (``name.givenName``)."""
    if attributes:
        wanted = _selection(attributes)
        out: JsonObject = {}
        for key, value in resource.items():
            if key in ("id", "schemas"):
                out[key] = _json(value)
            elif key.lower() in wanted:
                subs = wanted[key.lower()]
                out[key] = _json(value) if subs is None else _subset(_json(value), subs,
                                                                      keep=True)
        return out
    if excluded:
        drop = _selection(excluded)
        out = {}
        for key, value in resource.items():
            subs = drop.get(key.lower(), set())
            if key in ("id", "schemas") or key.lower() not in drop:
                out[key] = _json(value)
            elif subs is not None:
                out[key] = _subset(_json(value), subs, keep=False)
        return out
    return resource


def _subset(value: JsonValue, subs: set[str], *, keep: bool) -> JsonValue:
    if isinstance(value, list):
        return [_subset(v, subs, keep=keep) for v in value]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if (k.lower() in subs) == keep}
    return value


def parse_filter(text: str | None, kind: str) -> tuple[str, str, bool] | None:
    """A list's ``filter`` as (column, value, case-exact); ``invalidFilter`` for any filter but
    ``attr eq "value"`` on an attribute of ``FILTERS``."""
    if text is None or not text.strip():
        return None
    names = ", ".join(FILTER_NAMES[kind])
    match = _FILTER.match(text)
    if match is None:
        raise ScimError(400, 'inferd filters with one comparison: attribute eq "value" '
                        f"(attributes: {names}).", "invalidFilter")
    attr, _op, value = match.groups()
    schema = USER if kind == "User" else GROUP
    if attr.lower().startswith(schema.lower() + ":"):
        attr = attr[len(schema) + 1:]
    column = FILTERS[kind].get(attr.lower())
    if column is None:
        raise ScimError(400, f"inferd cannot filter on '{attr}' (only on {names}).",
                        "invalidFilter")
    return column[0], _unquote(value), column[1]


def list_response(resources_: list[R], total: int, start: int) -> ListResponse[R]:
    return {"schemas": [LIST], "totalResults": total, "startIndex": start,
            "itemsPerPage": len(resources_), "Resources": resources_}


# -- the service ---------------------------------------------------------------------------------
class ScimService:
    """Users and Groups over SCIM, on ``TeamAdmin`` (writes) and ``ScimStore`` (reads)."""

    def __init__(self, teams: TeamAdmin, store: ScimStore) -> None:
        self.teams = teams
        self.store = store
        source = resources.files("inferd.auth").joinpath("scim_schemas.json").read_text()
        self.schema_documents: list[JsonObject] = json.loads(source)

    # -- discovery -------------------------------------------------------------------------------
    def service_provider_config(self, base: str) -> ServiceProviderConfig:
        return {
            "schemas": [SPC],
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": True},
            "authenticationSchemes": [{
                "type": "oauthbearertoken", "name": "Bearer API key", "primary": True,
                "description": "An inferd API key of the scim scope, sent as "
                               "'Authorization: Bearer <key>'."}],
            "meta": {"resourceType": "ServiceProviderConfig",
                     "location": f"{base}/ServiceProviderConfig"},
        }

    def resource_types(self, base: str) -> list[ResourceType]:
        return [{"schemas": [RESOURCE_TYPE], "id": name, "name": name, "endpoint": endpoint,
                 "description": description, "schema": schema,
                 "meta": {"resourceType": "ResourceType",
                          "location": f"{base}/ResourceTypes/{name}"}}
                for name, endpoint, description, schema in (
                    ("User", "/Users", "An inferd user", USER),
                    ("Group", "/Groups", "An inferd team", GROUP))]

    def schemas(self, base: str) -> list[JsonObject]:
        return [{**doc, "meta": {"resourceType": "Schema",
                                 "location": f"{base}/Schemas/{doc['id']}"}}
                for doc in self.schema_documents]

    # -- users -----------------------------------------------------------------------------------
    async def _user_row(self, user_id: str) -> ScimUserRow:
        row = await self.store.user(_row_id(user_id))
        if row is None:
            raise ScimError(404, f"No User with id {user_id}.")
        return row

    async def get_user(self, user_id: str, base: str) -> UserResource:
        return user_resource(await self._user_row(user_id), base)

    async def list_users(self, base: str, where: tuple[str, str, bool] | None, start: int,
                         count: int) -> ListResponse[UserResource]:
        total, rows = await self.store.user_page(where, start - 1, count)
        return list_response([user_resource(r, base) for r in rows], total, start)

    async def _unique(self, kind: str, name: str, row_id: int | None = None) -> None:
        """409 ``uniqueness`` when another user (team) has ``name``, compared without case."""
        found = await self.store.named(kind, name)
        if found is not None and found != row_id:
            raise ScimError(409, f"A {kind} named '{name}' exists already.", "uniqueness")

    @in_scim_terms
    async def create_user(self, body: JsonValue, base: str) -> UserResource:
        _check_schemas(_object(body, "body"), USER)
        attrs = parse_user(body)
        await self._unique("user", attrs["userName"])
        row = await self.teams.create_user_values(user_columns(attrs))
        return user_resource(await self._user_row(str(row["id"])), base)

    @in_scim_terms
    async def replace_user(self, user_id: str, body: JsonValue, base: str,
                           if_match: str | None = None) -> UserResource:
        _check_schemas(_object(body, "body"), USER)
        current = await self.get_user(user_id, base)
        _precondition(current, if_match)
        return await self._store_user(user_id, parse_user(body), base)

    @in_scim_terms
    async def patch_user(self, user_id: str, body: JsonValue, base: str,
                         if_match: str | None = None) -> UserResource:
        current = await self.get_user(user_id, base)
        _precondition(current, if_match)
        patched = apply_patch(attributes_of(current), body, USER, USER_ATTRIBUTES)
        return await self._store_user(user_id, parse_user(patched), base)

    async def _store_user(self, user_id: str, attrs: UserAttributes,
                          base: str) -> UserResource:
        row = await self._user_row(user_id)
        await self._unique("user", attrs["userName"], int(row["id"]))
        columns = user_columns(attrs)
        values: UserColumns = {}
        if row.get("name") != columns["name"]:
            values["name"] = columns["name"]
        if row.get("external_id") != columns["external_id"]:
            values["external_id"] = columns["external_id"]
        if row.get("display_name") != columns["display_name"]:
            values["display_name"] = columns["display_name"]
        if row.get("email") != columns["email"]:
            values["email"] = columns["email"]
        if row.get("disabled") != columns["disabled"]:
            values["disabled"] = columns["disabled"]
        if row.get("scim") != columns["scim"]:
            values["scim"] = columns["scim"]
        if values:
            await self.teams.update_user_values(int(row["id"]), values)
        return await self.get_user(user_id, base)

    @in_scim_terms
    async def delete_user(self, user_id: str, if_match: str | None = None,
                          base: str = "") -> None:
        """Disable the user (their keys stop at once); delete them when they hold no keys,
        else take them out of SCIM."""
        row = await self._user_row(user_id)
        _precondition(user_resource(row, base), if_match)
        if not row["disabled"]:
            await self.teams.update_user_values(int(row["id"]), {"disabled": True})
        try:
            await self.teams.delete_user(int(row["id"]))
        except Conflict as exc:
            if exc.code != "user_has_keys":
                raise
            await self.teams.update_user_values(
                int(row["id"]), {"deprovisioned_at": time.time(), "external_id": None},
                action="user.deprovision")

    # -- groups ----------------------------------------------------------------------------------
    async def _group_row(self, group_id: str) -> ScimTeamRow:
        row = await self.store.team(_row_id(group_id))
        if row is None:
            raise ScimError(404, f"No Group with id {group_id}.")
        return row

    async def get_group(self, group_id: str, base: str) -> GroupResource:
        row = await self._group_row(group_id)
        return group_resource(row, await self.store.member_ids(int(row["id"])), base)

    async def list_groups(self, base: str, where: tuple[str, str, bool] | None, start: int,
                          count: int) -> ListResponse[GroupResource]:
        total, rows = await self.store.team_page(where, start - 1, count)
        members = await self.store.members_of([int(r["id"]) for r in rows])
        return list_response([group_resource(r, members.get(int(r["id"]), []), base)
                              for r in rows], total, start)

    @in_scim_terms
    async def create_group(self, body: JsonValue, base: str) -> GroupResource:
        _check_schemas(_object(body, "body"), GROUP)
        attrs = parse_group(body)
        await self._check_members(attrs["members"])
        await self._unique("team", attrs["displayName"])
        row = await self.teams.create_team_values(
            {"name": attrs["displayName"], "external_id": attrs.get("externalId")})
        await self._set_members(int(row["id"]), attrs["members"])
        return await self.get_group(str(row["id"]), base)

    @in_scim_terms
    async def replace_group(self, group_id: str, body: JsonValue, base: str,
                            if_match: str | None = None) -> GroupResource:
        _check_schemas(_object(body, "body"), GROUP)
        current = await self.get_group(group_id, base)
        _precondition(current, if_match)
        return await self._store_group(group_id, parse_group(body), base)

    @in_scim_terms
    async def patch_group(self, group_id: str, body: JsonValue, base: str,
                          if_match: str | None = None) -> GroupResource:
        current = await self.get_group(group_id, base)
        _precondition(current, if_match)
        patched = apply_patch(attributes_of(current), body, GROUP, GROUP_ATTRIBUTES)
        return await self._store_group(group_id, parse_group(patched), base)

    async def _store_group(self, group_id: str, attrs: GroupAttributes,
                           base: str) -> GroupResource:
        row = await self._group_row(group_id)
        await self._check_members(attrs["members"])
        await self._unique("team", attrs["displayName"], int(row["id"]))
        leaving = sorted(set(await self.store.member_ids(int(row["id"]))) - set(attrs["members"]))
        holders = await self.store.key_holders(int(row["id"]), leaving)
        if holders:  # refused before anything changes
            raise ScimError(409, f"The user {holders[0]} holds API keys of this team: delete "
                            "them or move them before taking the user out of it.")
        values: TeamColumns = {}
        if row.get("name") != attrs["displayName"]:
            values["name"] = attrs["displayName"]
        if row.get("external_id") != attrs.get("externalId"):
            values["external_id"] = attrs.get("externalId")
        if values:
            await self.teams.update_team_values(int(row["id"]), values)
        await self._set_members(int(row["id"]), attrs["members"])
        return await self.get_group(group_id, base)

    async def _check_members(self, members: list[int]) -> None:
        missing = await self.store.missing_users(members)
        if missing:
            raise invalid(f"No User with id {missing[0]}: a Group's members are Users.")

    async def _set_members(self, team_id: int, members: list[int]) -> None:
        """Make the team's members exactly ``members`` (new ones join as ``member``)."""
        current = set(await self.store.member_ids(team_id))
        for user_id in sorted(set(members) - current):
            await self.teams.add_member(team_id, user_id)
        for user_id in sorted(current - set(members)):
            await self.teams.remove_member(team_id, user_id)

    @in_scim_terms
    async def delete_group(self, group_id: str, if_match: str | None = None,
                           base: str = "") -> None:
        row = await self._group_row(group_id)
        _precondition(group_resource(row, await self.store.member_ids(int(row["id"])), base),
                      if_match)
        try:
            await self.teams.delete_team(int(row["id"]))
        except NotFound:
            raise ScimError(404, f"No Group with id {group_id}.") from None


def _row_id(text: str) -> int:
    """A resource id as the row's id; an id that cannot be one names no resource (404)."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return -1
    return int(text)


def _precondition(current: UserResource | GroupResource, if_match: str | None) -> None:
    """412 when ``If-Match`` names no version the resource has (RFC 7644 3.14)."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = {t.strip() for t in if_match.split(",")}
    tags |= {t[2:] for t in tags if t.startswith("W/")}
    ours = current["meta"]["version"]
    if ours not in tags and ours[2:] not in tags:
        raise ScimError(412, "The resource has changed since the version If-Match names.")

