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
from typing import Any, ParamSpec, TypeVar

import orjson

from inferd.auth.teams import TeamAdmin
from inferd.errors import Conflict, InferdError, NotFound
from inferd.store.scim import ScimStore

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


def error_body(exc: ScimError) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR], "status": str(exc.status),
                            "detail": exc.message}
    if exc.scim_type:
        body["scimType"] = exc.scim_type
    return body


# -- values ------------------------------------------------------------------------------------
def _text(value: Any, where: str, limit: int = NAME_CHARS, *, blank: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid(f"'{where}' must be a string.")
    if len(value) > limit:
        raise invalid(f"'{where}' has more than {limit} characters.")
    if "\x00" in value:
        raise invalid(f"'{where}' may not hold a NUL character.")
    if not blank and not value.strip():
        raise invalid(f"'{where}' may not be blank.")
    return value


def _optional_text(value: Any, where: str, limit: int = NAME_CHARS) -> str | None:
    return None if value is None else _text(value, where, limit)


def _boolean(value: Any, where: str) -> bool:
    # Some providers send booleans as the strings "True" and "False".
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise invalid(f"'{where}' must be a boolean.")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{where}' must be an object.")
    return value


def _known(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``data`` with its known attribute names spelled as SCIM does; unknown ones left out."""
    return {names[k.lower()]: v for k, v in data.items() if k.lower() in names}


def _strip_urn(data: dict[str, Any], schema: str) -> dict[str, Any]:
    """Attributes sent under their full name (``urn:...:User:userName``) as short names."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name.lower().startswith(schema.lower() + ":"):
            out[name[len(schema) + 1:]] = value
        elif name.lower() == schema.lower() and isinstance(value, dict):
            out.update(value)
        else:
            out[name] = value
    return out


def _check_schemas(data: dict[str, Any], schema: str) -> None:
    schemas = data.get("schemas")
    if not isinstance(schemas, list) or schema not in schemas:
        raise ScimError(400, f"'schemas' must list {schema}.", "invalidSyntax")


def parse_user(data: Any) -> dict[str, Any]:
    """The SCIM attributes of a User body (checked), with absent ones left out."""
    body = _strip_urn(_object(data, "body"), USER)
    attrs = _known(body, USER_ATTRIBUTES)
    out: dict[str, Any] = {"userName": _text(attrs.get("userName"), "userName")}
    if attrs.get("externalId") is not None:
        out["externalId"] = _text(attrs["externalId"], "externalId")
    if attrs.get("displayName") is not None:
        out["displayName"] = _text(attrs["displayName"], "displayName", blank=True)
    if attrs.get("name") is not None:
        name = {k: _optional_text(v, f"name.{k}", 255)
                for k, v in _known(_object(attrs["name"], "name"), NAME_PARTS).items()}
        name = {k: v for k, v in name.items() if v is not None}
        if name:
            out["name"] = name
    if attrs.get("emails") is not None:
        out["emails"] = _emails(attrs["emails"])
    if attrs.get("active") is not None:
        out["active"] = _boolean(attrs["active"], "active")
    return out


def _emails(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_EMAILS:
        raise invalid(f"'emails' must be a list of at most {MAX_EMAILS} objects.")
    emails = []
    for item in value:
        email = _known(_object(item, "emails"), EMAIL_PARTS)
        checked: dict[str, Any] = {"value": _text(email.get("value"), "emails.value",
                                                  EMAIL_CHARS)}
        if email.get("type") is not None:
            checked["type"] = _text(email["type"], "emails.type", 64)
        if email.get("primary") is not None:
            checked["primary"] = _boolean(email["primary"], "emails.primary")
        emails.append(checked)
    if sum(1 for e in emails if e.get("primary")) > 1:
        raise invalid("At most one of 'emails' may be primary.")
    return emails


def parse_group(data: Any) -> dict[str, Any]:
    """The SCIM attributes of a Group body (checked): ``members`` as user ids."""
    body = _strip_urn(_object(data, "body"), GROUP)
    attrs = _known(body, GROUP_ATTRIBUTES)
    out: dict[str, Any] = {"displayName": _text(attrs.get("displayName"), "displayName")}
    if attrs.get("externalId") is not None:
        out["externalId"] = _text(attrs["externalId"], "externalId")
    members = attrs.get("members") or []
    if not isinstance(members, list) or len(members) > MAX_MEMBERS:
        raise invalid(f"'members' must be a list of at most {MAX_MEMBERS} objects.")
    out["members"] = sorted({_member_id(m) for m in members})
    return out


def _member_id(item: Any) -> int:
    value = _known(_object(item, "members"), MEMBER_PARTS).get("value")
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or \
            len(value) > 18:
        raise invalid(f"'members.value' must be the id of a User, not {value!r}.")
    return int(value)


def user_columns(attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``users`` columns of a User's attributes."""
    emails = attrs.get("emails") or []
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    # ``active``: whether the provider set it (absent: the user is active, and SCIM shows
    # no ``active`` until it is set; a disabled user always shows ``active: false``)
    kept = {k: attrs[k] is not None if k == "active" else attrs[k]
            for k in ("name", "emails", "active") if k in attrs}
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


def apply_patch(resource: dict[str, Any], body: Any, schema: str,
                names: dict[str, str]) -> dict[str, Any]:
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
    result: dict[str, Any] = json.loads(json.dumps(resource))
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


def _operate(data: dict[str, Any], kind: str, path: str | None, value: Any, has_value: bool,
             schema: str, names: dict[str, str]) -> None:
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
    elif kind == "remove":
        if isinstance(data.get(name), list) and has_value and isinstance(value, list):
            # remove these values of a multi-valued attribute (``members``)
            gone = {str(v.get("value")) for v in value if isinstance(v, dict)}
            data[name] = [v for v in data[name]
                          if not isinstance(v, dict) or str(v.get("value")) not in gone]
        else:
            data.pop(name, None)
    elif kind == "add" and isinstance(data.get(name), list):
        data[name] = data[name] + [v for v in (value if isinstance(value, list) else [value])
                                   if v not in data[name]]
    elif kind == "add" and isinstance(data.get(name), dict) and isinstance(value, dict):
        data[name].update(value)
    else:
        data[name] = value


def _operate_filtered(data: dict[str, Any], kind: str, name: str, filter_attr: str,
                      filter_value: str, sub: str | None, value: Any) -> None:
    items = data.get(name)
    if items is None and kind == "add" and sub is not None:
        items = data[name] = []
    if not isinstance(items, list):
        if kind == "remove":
            return
        raise ScimError(400, f"'{name}' is not multi-valued.", "invalidPath")

    def matches(item: Any) -> bool:
        return isinstance(item, dict) and any(
            k.lower() == filter_attr.lower() and str(v).lower() == filter_value.lower()
            for k, v in item.items())

    hits = [item for item in items if matches(item)]
    if kind == "remove":
        if sub is None:
            data[name] = [item for item in items if not matches(item)]
        else:
            for item in hits:
                _drop(item, sub)
        return
    if not hits:
        if kind == "replace" and sub is None:
            raise ScimError(400, f"No value of '{name}' matches the filter.", "noTarget")
        hits = [{filter_attr: filter_value}]
        items.append(hits[0])
    for item in hits:
        if sub is None:
            item.clear()
            item.update(_object(value, "value"))
        else:
            item[sub] = value


def _drop(data: dict[str, Any], name: str) -> None:
    for key in [k for k in data if k.lower() == name.lower()]:
        del data[key]


# -- views ---------------------------------------------------------------------------------------
def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def version(resource: dict[str, Any]) -> str:
    """A weak ETag of a resource: a hash of its content (``meta`` aside)."""
    content = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f'W/"{digest[:20]}"'


def _with_meta(resource: dict[str, Any], kind: str, row: dict[str, Any],
               location: str) -> dict[str, Any]:
    resource["meta"] = {"resourceType": kind, "created": _stamp(row["created_at"]),
                        "lastModified": _stamp(row["updated_at"]), "location": location}
    resource["meta"]["version"] = version(resource)
    return resource


def user_resource(row: dict[str, Any], base: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"schemas": [USER], "id": str(row["id"])}
    if row.get("external_id") is not None:
        resource["externalId"] = row["external_id"]
    resource["userName"] = row["name"]
    kept = row.get("scim") or {}
    if kept.get("name"):
        resource["name"] = kept["name"]
    if row.get("display_name") is not None:
        resource["displayName"] = row["display_name"]
    if kept.get("emails"):
        resource["emails"] = kept["emails"]
    elif row.get("email"):
        resource["emails"] = [{"value": row["email"], "primary": True}]
    if row["disabled"] or row.get("scim") is None or kept.get("active"):
        resource["active"] = not row["disabled"]
    return _with_meta(resource, "User", row, f"{base}/Users/{row['id']}")


def group_resource(row: dict[str, Any], members: list[int], base: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"schemas": [GROUP], "id": str(row["id"])}
    if row.get("external_id") is not None:
        resource["externalId"] = row["external_id"]
    resource["displayName"] = row["name"]
    resource["members"] = [{"value": str(m), "$ref": f"{base}/Users/{m}"} for m in members]
    return _with_meta(resource, "Group", row, f"{base}/Groups/{row['id']}")


def attributes_of(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's own attributes (what a PATCH changes)."""
    return {k: v for k, v in resource.items() if k not in READ_ONLY}


def project(resource: dict[str, Any], attributes: list[str] | None,
            excluded: list[str] | None) -> dict[str, Any]:
    """The resource with only ``attributes`` (or without ``excluded``), RFC 7644 3.4.2.5:
    ``id`` and ``schemas`` always stay. Names may name a sub-attribute (``name.givenName``)."""
    if attributes:
        wanted: dict[str, set[str] | None] = {}
        for path in attributes:
            top, _, sub = path.partition(".")
            top = top.lower()
            if sub and wanted.get(top, set()) is not None:
                wanted.setdefault(top, set()).add(sub.lower())  # type: ignore[union-attr]
            else:
                wanted[top] = None
        out: dict[str, Any] = {}
        for key, value in resource.items():
            if key in ("id", "schemas"):
                out[key] = value
            elif key.lower() in wanted:
                subs = wanted[key.lower()]
                out[key] = value if subs is None else _subset(value, subs, keep=True)
        return out
    if excluded:
        drop: dict[str, set[str] | None] = {}
        for path in excluded:
            top, _, sub = path.partition(".")
            if sub:
                if drop.get(top.lower(), set()) is not None:
                    drop.setdefault(top.lower(), set()).add(sub.lower())  # type: ignore[union-attr]
            else:
                drop[top.lower()] = None
        out = {}
        for key, value in resource.items():
            subs = drop.get(key.lower(), set())
            if key in ("id", "schemas") or key.lower() not in drop:
                out[key] = value
            elif subs is not None:
                out[key] = _subset(value, subs, keep=False)
        return out
    return resource


def _subset(value: Any, subs: set[str], *, keep: bool) -> Any:
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


def list_response(resources_: list[dict[str, Any]], total: int,
                  start: int) -> dict[str, Any]:
    return {"schemas": [LIST], "totalResults": total, "startIndex": start,
            "itemsPerPage": len(resources_), "Resources": resources_}


# -- the service ---------------------------------------------------------------------------------
class ScimService:
    """Users and Groups over SCIM, on ``TeamAdmin`` (writes) and ``ScimStore`` (reads)."""

    def __init__(self, teams: TeamAdmin, store: ScimStore) -> None:
        self.teams = teams
        self.store = store
        source = resources.files("inferd.auth").joinpath("scim_schemas.json").read_text()
        self.schema_documents: list[dict[str, Any]] = json.loads(source)

    # -- discovery -------------------------------------------------------------------------------
    def service_provider_config(self, base: str) -> dict[str, Any]:
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

    def resource_types(self, base: str) -> list[dict[str, Any]]:
        return [{"schemas": [RESOURCE_TYPE], "id": name, "name": name, "endpoint": endpoint,
                 "description": description, "schema": schema,
                 "meta": {"resourceType": "ResourceType",
                          "location": f"{base}/ResourceTypes/{name}"}}
                for name, endpoint, description, schema in (
                    ("User", "/Users", "An inferd user", USER),
                    ("Group", "/Groups", "An inferd team", GROUP))]

    def schemas(self, base: str) -> list[dict[str, Any]]:
        return [{**doc, "meta": {"resourceType": "Schema",
                                 "location": f"{base}/Schemas/{doc['id']}"}}
                for doc in self.schema_documents]

    # -- users -----------------------------------------------------------------------------------
    async def _user_row(self, user_id: str) -> dict[str, Any]:
        row = await self.store.user(_row_id(user_id))
        if row is None:
            raise ScimError(404, f"No User with id {user_id}.")
        return row

    async def get_user(self, user_id: str, base: str) -> dict[str, Any]:
        return user_resource(await self._user_row(user_id), base)

    async def list_users(self, base: str, where: tuple[str, str, bool] | None, start: int,
                         count: int) -> dict[str, Any]:
        total, rows = await self.store.user_page(where, start - 1, count)
        return list_response([user_resource(r, base) for r in rows], total, start)

    async def _unique(self, kind: str, name: str, row_id: int | None = None) -> None:
        """409 ``uniqueness`` when another user (team) has ``name``, compared without case."""
        found = await self.store.named(kind, name)
        if found is not None and found != row_id:
            raise ScimError(409, f"A {kind} named '{name}' exists already.", "uniqueness")

    @in_scim_terms
    async def create_user(self, body: Any, base: str) -> dict[str, Any]:
        _check_schemas(_object(body, "body"), USER)
        attrs = parse_user(body)
        await self._unique("user", attrs["userName"])
        row = await self.teams.create_user_values(user_columns(attrs))
        return user_resource(await self._user_row(str(row["id"])), base)

    @in_scim_terms
    async def replace_user(self, user_id: str, body: Any, base: str,
                           if_match: str | None = None) -> dict[str, Any]:
        _check_schemas(_object(body, "body"), USER)
        current = await self.get_user(user_id, base)
        _precondition(current, if_match)
        return await self._store_user(user_id, parse_user(body), base)

    @in_scim_terms
    async def patch_user(self, user_id: str, body: Any, base: str,
                         if_match: str | None = None) -> dict[str, Any]:
        current = await self.get_user(user_id, base)
        _precondition(current, if_match)
        patched = apply_patch(attributes_of(current), body, USER, USER_ATTRIBUTES)
        return await self._store_user(user_id, parse_user(patched), base)

    async def _store_user(self, user_id: str, attrs: dict[str, Any],
                          base: str) -> dict[str, Any]:
        row = await self._user_row(user_id)
        await self._unique("user", attrs["userName"], int(row["id"]))
        values = {k: v for k, v in user_columns(attrs).items() if row.get(k) != v}
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
    async def _group_row(self, group_id: str) -> dict[str, Any]:
        row = await self.store.team(_row_id(group_id))
        if row is None:
            raise ScimError(404, f"No Group with id {group_id}.")
        return row

    async def get_group(self, group_id: str, base: str) -> dict[str, Any]:
        row = await self._group_row(group_id)
        return group_resource(row, await self.store.member_ids(int(row["id"])), base)

    async def list_groups(self, base: str, where: tuple[str, str, bool] | None, start: int,
                          count: int) -> dict[str, Any]:
        total, rows = await self.store.team_page(where, start - 1, count)
        members = await self.store.members_of([int(r["id"]) for r in rows])
        return list_response([group_resource(r, members.get(int(r["id"]), []), base)
                              for r in rows], total, start)

    @in_scim_terms
    async def create_group(self, body: Any, base: str) -> dict[str, Any]:
        _check_schemas(_object(body, "body"), GROUP)
        attrs = parse_group(body)
        await self._check_members(attrs["members"])
        await self._unique("team", attrs["displayName"])
        row = await self.teams.create_team_values(
            {"name": attrs["displayName"], "external_id": attrs.get("externalId")})
        await self._set_members(int(row["id"]), attrs["members"])
        return await self.get_group(str(row["id"]), base)

    @in_scim_terms
    async def replace_group(self, group_id: str, body: Any, base: str,
                            if_match: str | None = None) -> dict[str, Any]:
        _check_schemas(_object(body, "body"), GROUP)
        current = await self.get_group(group_id, base)
        _precondition(current, if_match)
        return await self._store_group(group_id, parse_group(body), base)

    @in_scim_terms
    async def patch_group(self, group_id: str, body: Any, base: str,
                          if_match: str | None = None) -> dict[str, Any]:
        current = await self.get_group(group_id, base)
        _precondition(current, if_match)
        patched = apply_patch(attributes_of(current), body, GROUP, GROUP_ATTRIBUTES)
        return await self._store_group(group_id, parse_group(patched), base)

    async def _store_group(self, group_id: str, attrs: dict[str, Any],
                           base: str) -> dict[str, Any]:
        row = await self._group_row(group_id)
        await self._check_members(attrs["members"])
        await self._unique("team", attrs["displayName"], int(row["id"]))
        leaving = sorted(set(await self.store.member_ids(int(row["id"]))) - set(attrs["members"]))
        holders = await self.store.key_holders(int(row["id"]), leaving)
        if holders:  # refused before anything changes
            raise ScimError(409, f"The user {holders[0]} holds API keys of this team: delete "
                            "them or move them before taking the user out of it.")
        values = {k: v for k, v in (("name", attrs["displayName"]),
                                    ("external_id", attrs.get("externalId")))
                  if row.get(k) != v}
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


def _precondition(current: dict[str, Any], if_match: str | None) -> None:
    """412 when ``If-Match`` names no version the resource has (RFC 7644 3.14)."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = {t.strip() for t in if_match.split(",")}
    tags |= {t[2:] for t in tags if t.startswith("W/")}
    ours = current["meta"]["version"]
    if ours not in tags and ours[2:] not in tags:
        raise ScimError(412, "The resource has changed since the version If-Match names.")

