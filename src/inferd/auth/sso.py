"""Single sign-on with an OpenID Connect provider (``docs/security/sso.md``).

The browser's login (``begin``, ``finish``): the authorization code flow with PKCE (S256),
``state`` and ``nonce``, kept between the two steps in an encrypted, HttpOnly cookie (no row,
so any gateway may take the callback). The ID token validated, the user is found by the
provider's identity (issuer and subject) or made, the admin's group rules (``SsoRules``) are
applied to the user's memberships and installation role, and the browser gets a session: a
short-lived API key of that user (``SESSION_KEY``, expiring after ``oidc_session_seconds``)
handed over once through another encrypted, HttpOnly cookie (``handoff``), never in a URL.

The API with the provider's access tokens (``principal``): a token validated (signature by
the provider's keys, issuer, audience ``oidc_audience``, expiry) acts as its user through the
user's API key for single sign-on (``API_KEY``, whose secret nobody holds): that key brings the
user's limits, role and team (the first team the rules make them owner or member of), and the
work it submits (jobs) is the user's.

Every login is audited (``sso.login``, ``sso.login_failed`` with the subject, the client address
and the reason; ``sso.user.create`` for a user made by a login), and so are the changes the
rules make (``team.member.set``, ``team.member.remove``, ``user.update``, ``key.*``).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken as BadCookie
from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferd.audit import AuditLog, acting_as, current_actor
from inferd.auth.admin import KeySpec, KeyUpdate
from inferd.auth.oidc import InvalidToken, OidcClient, pkce_pair
from inferd.auth.principal import Principal, Scope
from inferd.auth.service import Auth
from inferd.auth.teams import MemberRole, MemberSpec, Role, UserUpdate, user_view
from inferd.errors import AuthenticationFailed, Conflict, InferdError, NotFound
from inferd.jsontypes import JsonObject, JsonValue
from inferd.settings import SsoSettings
from inferd.store.db import Database
from inferd.store.repo import SSO_COOKIE_KEY, KeyValueStore
from inferd.store.sso import SsoStore, SsoUser, sso_user
from inferd.store.teams import KEY_HOLDING_ROLES, TeamStore

log = logging.getLogger("inferd.auth")

SESSION_KEY = "sso session"  # the name of a browser session's key
API_KEY = "sso api"  # the name of the key the provider's access tokens act through
RULES_KV = "sso.rules"
# A login has this long between leaving for the provider and coming back; the session's key
# is handed over within this long after the callback.
LOGIN_SECONDS = 600
HANDOFF_SECONDS = 120
# Access tokens' subjects remembered with their user's key id (at most, for how long).
SUBJECTS_KEPT = 10_000
SUBJECT_SECONDS = 30.0
MEMBER_RANK = {"viewer": 1, "member": 2, "owner": 3}
ROLE_RANK = {None: 0, "auditor": 1, "admin": 2}
ROLE_SCOPE: dict[str | None, Scope] = {None: "user", "auditor": "auditor", "admin": "admin"}
ROLES: dict[str, Role] = {"admin": "admin", "auditor": "auditor"}  # a user's role column


class SsoRule(BaseModel):
    """Members of ``group`` (a value of the groups claim) get a role in ``team`` (a team's
    name; ``role``: owner, member or viewer, member when left out) or the installation role
    ``installation_role`` (admin or auditor): one of the two per rule."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1, max_length=255)
    team: str | None = Field(default=None, min_length=1, max_length=191)
    role: MemberRole | None = None
    installation_role: Role | None = None

    @model_validator(mode="after")
    def _one_grant(self) -> SsoRule:
        if (self.team is None) == (self.installation_role is None):
            raise ValueError("a rule gives either a team (with its role) or an "
                             "installation_role")
        if self.role is not None and self.team is None:
            raise ValueError("role is a team's role: it needs team")
        return self


class SsoRules(BaseModel):
    """The group rules, applied in order at each login. The rules govern the teams they name
    (memberships there are granted, changed and removed to match the groups) and, when any
    rule names an installation role, the user's installation role; nothing else."""

    model_config = ConfigDict(extra="forbid")

    rules: list[SsoRule] = Field(default_factory=list, max_length=1000)


class SsoRuleView(TypedDict):
    """A rule as the API shows it (the fields set)."""

    group: str
    team: NotRequired[str]
    role: NotRequired[MemberRole]
    installation_role: NotRequired[Role]


class SsoRulesView(TypedDict):
    object: str
    rules: list[SsoRuleView]


def rule_view(rule: SsoRule) -> SsoRuleView:
    view: SsoRuleView = {"group": rule.group}
    if rule.team is not None:
        view["team"] = rule.team
    if rule.role is not None:
        view["role"] = rule.role
    if rule.installation_role is not None:
        view["installation_role"] = rule.installation_role
    return view


def rules_view(rules: SsoRules) -> SsoRulesView:
    return {"object": "sso.rules", "rules": [rule_view(rule) for rule in rules.rules]}


class LoginState(TypedDict):
    """What a login's cookie holds (encrypted) between ``begin`` and ``finish``."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str


class Handoff(TypedDict):
    """What the cookie handing a session's key over holds (encrypted)."""

    key: str
    user: str


@dataclass(frozen=True, slots=True)
class Login:
    """What ``begin`` answers: where to send the browser, and the cookie of the login."""

    url: str
    cookie: str


@dataclass(frozen=True, slots=True)
class Session:
    """What ``finish`` answers: the cookie handing the session's key over, and its user."""

    cookie: str
    user: str


class LoginFailed(AuthenticationFailed):
    code = "sso_login_failed"


class Sso:
    """Single sign-on of one installation with one provider."""

    def __init__(self, settings: SsoSettings, client: OidcClient, auth: Auth, store: SsoStore,
                 teams: TeamStore, kv: KeyValueStore, audit: AuditLog, box: Fernet) -> None:
        self.client = client
        self.auth = auth
        self.store = store
        self.teams = teams
        self.kv = kv
        self.audit = audit
        self.box = box
        self.issuer = settings.oidc_issuer
        self.groups_claim = settings.oidc_groups_claim
        self.session_seconds = settings.oidc_session_seconds
        self.redirect_base = settings.oidc_redirect_base_url.rstrip("/")
        # access token subject -> (its user's API key id, when read)
        self._subjects: OrderedDict[str, tuple[str, float]] = OrderedDict()

    @classmethod
    async def start(cls, settings: SsoSettings, db: Database, auth: Auth, audit: AuditLog,
                    client: OidcClient) -> Sso:
        kv = KeyValueStore(db)
        secret = await kv.setdefault_secret(SSO_COOKIE_KEY, Fernet.generate_key().decode())
        return cls(settings, client, auth, SsoStore(db), TeamStore(db), kv, audit,
                   Fernet(secret.encode()))

    # -- the browser's login ---------------------------------------------------------------
    def redirect_uri(self, request_base: str) -> str:
        return f"{self.redirect_base or request_base.rstrip('/')}/ui/sso/callback"

    async def begin(self, request_base: str) -> Login:
        """Where the browser goes to sign in, and the login's cookie (its state, nonce, PKCE
        verifier and redirect URI, encrypted)."""
        verifier, challenge = pkce_pair()
        state, nonce = _random(), _random()
        redirect_uri = self.redirect_uri(request_base)
        url = await self.client.authorization_url(redirect_uri, state, nonce, challenge)
        login: LoginState = {"state": state, "nonce": nonce, "verifier": verifier,
                             "redirect_uri": redirect_uri}
        cookie = self.box.encrypt(json.dumps(login).encode()).decode()
        return Login(url, cookie)

    async def finish(self, *, code: str | None, state: str | None, error: str | None,
                     cookie: str | None) -> Session:
        """The callback: the code exchanged and the ID token validated, the user found or
        made and the rules applied; the cookie that hands the session's key over. A failure
        is audited (``sso.login_failed``) and refused with ``LoginFailed`` (401)."""
        subject: str | None = None
        try:
            if error:
                raise LoginFailed(f"The provider refused the login ({error[:100]}).")
            login = self._open(cookie, LOGIN_SECONDS)
            if login is None:
                raise LoginFailed("No login is in progress here, or it took too long: "
                                  "sign in again.")
            if not state or not _same(state, str(login.get("state", ""))):
                raise LoginFailed("The login's state does not match: sign in again.")
            if not code:
                raise LoginFailed("The provider sent no authorization code.")
            tokens = await self.client.exchange(code, str(login["verifier"]),
                                                str(login["redirect_uri"]))
            claims = await self.client.verify(str(tokens["id_token"]),
                                              audience=self.client.client_id,
                                              nonce=str(login["nonce"]), what="ID token")
            subject = str(claims["sub"])
            return await self.sign_in(claims)
        except InferdError as exc:
            await self.audit.record("sso.login_failed", "sso", subject, after={
                "issuer": self.issuer, "subject": subject, "reason": exc.message})
            if isinstance(exc, LoginFailed) or not isinstance(exc, AuthenticationFailed):
                raise  # refused, or the provider could not be reached (503)
            raise LoginFailed(f"Single sign-on failed: {exc.message}") from None

    async def sign_in(self, claims: JsonObject) -> Session:
        """Sign in the subject of a validated ID token (its ``claims``): the user found or
        made, the rules applied to their groups, a session key made."""
        subject = str(claims["sub"])
        groups = _groups(claims.get(self.groups_claim))
        user, created = await self._user(subject, claims)
        if user["disabled"]:
            raise LoginFailed("This user has been disabled.", code="user_disabled")
        with self._as(user["name"]):
            role = await self._apply_rules(user, groups)
            key = await self._session_key(user["id"], role)
            await self.audit.record("sso.login", "user", user["id"], after={
                "issuer": self.issuer, "subject": subject, "name": user["name"],
                "groups": groups, "role": role, "created": created})
        self._subjects.pop(subject, None)
        handoff: Handoff = {"key": key, "user": user["name"]}
        cookie = self.box.encrypt(json.dumps(handoff).encode())
        return Session(cookie.decode(), str(user["name"]))

    def handoff(self, cookie: str | None) -> Handoff:
        """The session's key the callback's cookie holds (within ``HANDOFF_SECONDS``)."""
        session = self._open(cookie, HANDOFF_SECONDS)
        if session is None or not isinstance(session.get("key"), str):
            raise AuthenticationFailed("No single sign-on session to take over: sign in "
                                       "again.", code="sso_no_session")
        return {"key": str(session["key"]), "user": str(session.get("user", ""))}

    async def logout(self, principal: Principal) -> bool:
        """Delete the browser session's key ``principal`` holds (False: not such a key)."""
        if principal.key_id is None or principal.user_id is None or principal.name != SESSION_KEY:
            return False
        try:
            await self.auth.admin.delete(int(principal.key_id))
        except NotFound:
            return False
        return True

    def _open(self, cookie: str | None, ttl: int) -> JsonObject | None:
        """The JSON object an encrypted cookie of ours holds (None: no such cookie, or it is
        older than ``ttl``)."""
        if not cookie:
            return None
        try:
            value = json.loads(self.box.decrypt(cookie.encode(), ttl=ttl))
        except (BadCookie, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @contextmanager
    def _as(self, name: str) -> Iterator[None]:
        """The changes of a login are the user's (``name``) own (through single sign-on)."""
        actor = current_actor()
        with acting_as(type(actor)(name=f"single sign-on: {name}", scope="sso",
                                   user=name, via="api",
                                   address=actor.address, request_id=actor.request_id)):
            yield

    # -- the user --------------------------------------------------------------------------
    async def _user(self, subject: str, claims: JsonObject) -> tuple[SsoUser, bool]:
        """The user of the identity ``subject``: found, linked (provisioned over SCIM) or
        made (audited ``sso.user.create``, as the user's own change); True when made."""
        found = await self.store.user_by_identity(self.issuer, subject)
        if found is not None:
            return found, False
        claimed_email = claims.get("email")
        email = claimed_email if isinstance(claimed_email, str) else None
        # The provider's SCIM client provisioned the user before their first login: that user
        # (one only, by name or email) becomes this identity's, so that deprovisioning it over
        # SCIM also ends this identity's access. Users made otherwise are never taken over.
        names = [str(claims[c]) for c in ("preferred_username", "email")
                 if isinstance(claims.get(c), str)]
        provisioned = await self.store.provisioned_users(names)
        if len(provisioned) == 1:
            row = await self.auth.teams.update_user_values(
                int(provisioned[0]["id"]), {"sso_issuer": self.issuer, "sso_subject": subject},
                action="sso.user.link")
            return sso_user(row), False
        base = next((str(claims[c]) for c in ("preferred_username", "email", "name")
                     if isinstance(claims.get(c), str) and str(claims[c]).strip()), subject)
        for name in (base[:191], f"{base[:120]} ({subject[:60]})"):
            try:
                row = await self.teams.create_user({
                    "name": name, "email": None if email is None else email[:320],
                    "sso_issuer": self.issuer, "sso_subject": subject})
            except Conflict:
                found = await self.store.user_by_identity(self.issuer, subject)
                if found is not None:  # made by a concurrent login of the same subject
                    return found, False
                continue
            with self._as(str(row["name"])):
                await self.audit.record("sso.user.create", "user", row["id"], after={
                    **user_view(row), "sso_issuer": self.issuer, "sso_subject": subject})
            return sso_user(row), True
        raise LoginFailed(f"No user could be made for {base[:100]!r}: the name is taken.")

    async def _apply_rules(self, user: SsoUser, groups: list[str]) -> Role | None:
        """Grant, change and remove the user's memberships of the teams the rules name, and
        set the installation role when any rule names one; move the user's single sign-on
        keys to the first team they are owner or member of. Answers the role."""
        rules = (await self.rules()).rules
        user_id = int(user["id"])
        ids = await self.store.team_ids(sorted({r.team for r in rules if r.team}))
        wanted: dict[int, MemberRole] = {}
        role: Role | None = None if user["role"] is None else ROLES[user["role"]]
        if any(r.installation_role for r in rules):
            role = None
        for rule in rules:
            if rule.group not in groups:
                continue
            if rule.installation_role and ROLE_RANK[rule.installation_role] > ROLE_RANK[role]:
                role = rule.installation_role
            if rule.team is None or rule.team not in ids:
                continue
            team_id = ids[rule.team]
            member: MemberRole = rule.role or "member"
            if MEMBER_RANK[member] > MEMBER_RANK.get(wanted.get(team_id, ""), 0):
                wanted[team_id] = member
        primary = next((t for t, m in wanted.items() if m in KEY_HOLDING_ROLES), None)
        current = await self.store.memberships(user_id)
        admin = self.auth.teams
        if primary is not None and current.get(primary) != wanted[primary]:
            await admin.set_member(primary, user_id, MemberSpec(role=wanted[primary]))
        raising = ROLE_RANK[role] > ROLE_RANK[user["role"]]
        if raising:
            await self._set_role(user_id, role)
        await self._move_keys(user_id, primary, ROLE_SCOPE[role])
        if not raising and role != user["role"]:
            await self._set_role(user_id, role)
        for team_id, member in wanted.items():
            if team_id != primary and current.get(team_id) != member:
                await admin.set_member(team_id, user_id, MemberSpec(role=member))
        for team_id in ids.values():
            if team_id in current and team_id not in wanted:
                try:
                    await admin.remove_member(team_id, user_id)
                except (Conflict, NotFound) as exc:  # keys an admin gave them in the team
                    log.warning("single sign-on left %s in team %s: %s", user["name"],
                                team_id, exc.message)
        return role

    async def _set_role(self, user_id: int, role: Role | None) -> None:
        try:
            await self.auth.teams.update_user(user_id, UserUpdate(role=role))
        except Conflict as exc:  # the last admin keeps the role
            log.warning("single sign-on kept the role of user %s: %s", user_id, exc.message)

    async def _move_keys(self, user_id: int, team_id: int | None, scope: Scope) -> None:
        """The user's single sign-on keys in ``team_id`` with ``scope``; expired session
        keys deleted; the API key made when missing."""
        now = time.time()
        has_api = False
        for key in await self.store.keys_named(user_id, (SESSION_KEY, API_KEY)):
            if key["name"] == SESSION_KEY and key["expires_at"] is not None \
                    and key["expires_at"] <= now:
                await self.auth.admin.delete(int(key["id"]))
                continue
            has_api = has_api or key["name"] == API_KEY
            if key["team_id"] != team_id or key["scope"] != scope:
                await self.auth.admin.update(int(key["id"]),
                                             KeyUpdate(team_id=team_id, scope=scope))
        if not has_api:
            await self.auth.admin.create(KeySpec(
                name=API_KEY, user_id=user_id, team_id=team_id, scope=scope,
                metadata={"sso": "access tokens"}))

    async def _session_key(self, user_id: int, role: Role | None) -> str:
        keys = await self.store.keys_named(user_id, (API_KEY,))
        team_id = keys[0]["team_id"] if keys else None
        made = await self.auth.admin.create(KeySpec(
            name=SESSION_KEY, user_id=user_id, team_id=team_id, scope=ROLE_SCOPE[role],
            expires_in=self.session_seconds, metadata={"sso": "browser session"}))
        return str(made["key"])

    # -- the API with access tokens ----------------------------------------------------------
    async def principal(self, token: str) -> Principal:
        """The caller presenting the provider's access token ``token``: its user's."""
        claims = await self.client.verify(token, audience=self.client.audience,
                                          what="access token")
        subject = str(claims["sub"])
        key_id = self._kept(subject)
        if key_id is None:
            user = await self.store.user_by_identity(self.issuer, subject)
            keys = [] if user is None else await self.store.keys_named(int(user["id"]),
                                                                      (API_KEY,))
            if not keys:
                raise InvalidToken("This access token's user has not signed in to inferd "
                                   "yet: sign in once through the web UI.",
                                   code="sso_user_unknown")
            key_id = str(keys[0]["id"])
            self._keep(subject, key_id)
        try:
            return await self.auth.keys.owner_fresh(key_id)
        except AuthenticationFailed:
            self._subjects.pop(subject, None)
            raise InvalidToken("This access token's user has been disabled in inferd, or "
                               "their single sign-on key deleted (signing in again makes it).",
                               code="user_disabled") from None

    def _kept(self, subject: str) -> str | None:
        kept = self._subjects.get(subject)
        if kept is None or time.monotonic() - kept[1] > SUBJECT_SECONDS:
            return None
        return kept[0]

    def _keep(self, subject: str, key_id: str) -> None:
        self._subjects[subject] = (key_id, time.monotonic())
        self._subjects.move_to_end(subject)
        while len(self._subjects) > SUBJECTS_KEPT:
            self._subjects.popitem(last=False)

    # -- the rules -------------------------------------------------------------------------
    async def rules(self) -> SsoRules:
        stored = await self.kv.get(RULES_KV)
        return SsoRules() if stored is None else SsoRules.model_validate_json(stored)

    async def set_rules(self, rules: SsoRules) -> SsoRulesView:
        """Replace the rules (audited ``sso.rules.set``); a team they name must exist."""
        names = sorted({r.team for r in rules.rules if r.team})
        missing = sorted(set(names) - set(await self.store.team_ids(names)))
        if missing:
            raise NotFound(f"No team named {missing[0]!r}: make it before naming it in a "
                           "rule.", code="team_not_found")
        before = await self.rules()
        await self.kv.set(RULES_KV, rules.model_dump_json(exclude_none=True))
        view = rules_view(rules)
        await self.audit.record("sso.rules.set", "sso", "rules", before=rules_view(before),
                                after=view)
        return view


def _random() -> str:
    return secrets.token_urlsafe(32)


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def _groups(value: JsonValue) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int)][:1000]
    return []

