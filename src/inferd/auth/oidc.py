"""An OpenID Connect relying party: the provider's discovery document and keys, the
authorization code flow with PKCE, and the validation of the provider's tokens.

The discovery document (``<issuer>/.well-known/openid-configuration``) and the key set
(``jwks_uri``) are fetched once and kept for ``oidc_cache_seconds``. A token signed with a key
id the kept set lacks (the provider rotated its keys) fetches the set again, at most once per
``oidc_jwks_refresh_seconds`` however many such tokens arrive, and concurrent tokens share
that one fetch: a flood of forged key ids costs the provider nothing more.

A token is valid when its signature verifies with the provider's key of its ``kid`` (an
asymmetric algorithm only: never ``none`` nor a shared-secret one), its ``iss`` is the
issuer, its ``aud`` holds the audience expected, it has not expired (``exp``) and is not for
later (``nbf``, ``iat``), within ``oidc_leeway_seconds``; an ID token's ``nonce`` must be the
one the login sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from inferd.errors import AuthenticationFailed, Unavailable
from inferd.jsontypes import JsonObject
from inferd.settings import SsoSettings

# httpx and joserfc are imported where the provider is called or a token verified: every
# process imports this module (the HTTP layer tells a JWT from a key), few have single sign-on.
if TYPE_CHECKING:
    import httpx
    from joserfc.jwk import KeySet

# Signature algorithms accepted: asymmetric ones only (a shared-secret HS* token could be
# made by anyone holding the client secret, and ``none`` by anyone).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA")
# The longest token looked at (a JWT is far smaller).
MAX_TOKEN_CHARS = 16_384
TIMEOUT_SECONDS = 10.0


class InvalidToken(AuthenticationFailed):
    """A token the provider did not issue for this use, or no longer valid."""

    code = "invalid_token"


def looks_like_jwt(token: str) -> bool:
    """A compact JWT (three base64url parts, a JSON header): an API key never starts so."""
    return token.startswith("eyJ") and token.count(".") == 2 and len(token) <= MAX_TOKEN_CHARS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """What inferd reads of the provider's discovery document."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def _header(token: str) -> JsonObject:
    try:
        part = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("The token is not a JSON Web Token.") from None
    if not isinstance(header, dict):
        raise InvalidToken("The token is not a JSON Web Token.")
    return header


class OidcClient:
    """One provider (``oidc_issuer``) as this installation's client (``oidc_client_id``)."""

    def __init__(self, settings: SsoSettings, http: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret
        self.audience = settings.oidc_audience or settings.oidc_client_id
        self.scopes = settings.oidc_scopes
        self.cache_seconds = settings.oidc_cache_seconds
        self.refresh_seconds = settings.oidc_jwks_refresh_seconds
        self.leeway = settings.oidc_leeway_seconds
        self.http = http
        self.clock = clock
        self._metadata: ProviderEndpoints | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._keys_at = 0.0  # when the key set was last fetched (or tried)
        self._lock = asyncio.Lock()
        self.key_fetches = 0  # how many times the key set was fetched

    async def _get(self, url: str) -> JsonObject:
        import httpx

        try:
            answer = await self.http.get(url, headers={"Accept": "application/json"})
            answer.raise_for_status()
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"The OpenID provider could not be reached ({url}): {exc}",
                              code="sso_provider_unavailable") from None
        if not isinstance(body, dict):
            raise Unavailable(f"The OpenID provider answered no JSON object at {url}.",
                              code="sso_provider_unavailable")
        return body

    async def metadata(self) -> ProviderEndpoints:
        """The discovery document's endpoints (kept for ``oidc_cache_seconds``)."""
        now = self.clock()
        if self._metadata is None or now - self._metadata_at >= self.cache_seconds:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await self._get(url)
            if document.get("issuer") != self.issuer:
                raise Unavailable(f"The OpenID provider's discovery document names the issuer "
                                  f"{document.get('issuer')!r}, not {self.issuer!r}.",
                                  code="sso_provider_misconfigured")
            endpoints: list[str] = []
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                value = document.get(field)
                if not isinstance(value, str):
                    raise Unavailable(f"The OpenID provider's discovery document has no "
                                      f"{field}.", code="sso_provider_misconfigured")
                endpoints.append(value)
            self._metadata, self._metadata_at = ProviderEndpoints(*endpoints), now
        return self._metadata

    async def _fetch_keys(self) -> None:
        document = await self.metadata()
        self._keys_at = self.clock()
        self.key_fetches += 1
        body = await self._get(document.jwks_uri)
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        try:
            keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise Unavailable(f"The OpenID provider's key set could not be read: {exc}",
                              code="sso_provider_misconfigured") from None
        self._keys = keys
        self._kids = frozenset(str(key.kid) for key in keys.keys if key.kid)

    async def _key_set(self, kid: str | None) -> KeySet:
        """The key set, fetched when not yet kept, too old, or lacking ``kid`` (at most once
        per ``refresh_seconds`` for an unknown key id)."""
        async with self._lock:
            now = self.clock()
            stale = self._keys is None or now - self._keys_at >= self.cache_seconds
            unknown = kid is not None and kid not in self._kids
            if stale or (unknown and now - self._keys_at >= self.refresh_seconds):
                await self._fetch_keys()
            assert self._keys is not None
            return self._keys

    async def verify(self, token: str, *, audience: str, nonce: str | None = None,
                     what: str = "token") -> JsonObject:
        """The claims of ``token`` when it is valid (see the module's description), else
        ``InvalidToken``."""
        if not looks_like_jwt(token):
            raise InvalidToken(f"The {what} is not a JSON Web Token.")
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"The {what} is signed with an algorithm inferd does not "
                               f"accept ({str(alg)[:20]!r}).")
        keys = await self._key_set(kid if isinstance(kid, str) else None)
        if isinstance(kid, str) and kid not in self._kids:
            raise InvalidToken(f"The {what} is signed with a key the provider does not have.")
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            decoded = jwt.decode(token, keys, algorithms=[str(alg)])
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken(f"The {what}'s signature is not valid ({exc}).") from None
        claims: JsonObject = dict(decoded.claims)
        self._check(claims, audience, nonce, what)
        return claims

    def _check(self, claims: JsonObject, audience: str, nonce: str | None,
               what: str) -> None:
        if claims.get("iss") != self.issuer:
            raise InvalidToken(f"The {what} is from another issuer.")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise InvalidToken(f"The {what} is not meant for inferd (its audience is not "
                               f"{audience!r}).")
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise InvalidToken(f"The {what} has no expiry.")
        if exp + self.leeway <= now:
            raise InvalidToken(f"The {what} has expired.", code="token_expired")
        for field in ("nbf", "iat"):
            value = claims.get(field)
            if isinstance(value, int | float) and value - self.leeway > now:
                raise InvalidToken(f"The {what} is not valid yet ({field}).")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken(f"The {what} names no subject.")
        if nonce is not None and not secrets.compare_digest(
                str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise InvalidToken(f"The {what}'s nonce is not the one of this login.")

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str,
                                challenge: str) -> str:
        document = await self.metadata()
        query = urlencode({"response_type": "code", "client_id": self.client_id,
                           "redirect_uri": redirect_uri, "scope": self.scopes,
                           "state": state, "nonce": nonce, "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        endpoint = document.authorization_endpoint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> JsonObject:
        """The provider's tokens for an authorization code (with the PKCE verifier)."""
        import httpx

        document = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": verifier,
                "client_id": self.client_id}
        auth = (httpx.BasicAuth(self.client_id, self.client_secret) if self.client_secret
                else None)
        try:
            answer = await self.http.post(document.token_endpoint, data=form,
                                          auth=auth or httpx.USE_CLIENT_DEFAULT)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"The OpenID provider's token endpoint failed: {exc}",
                              code="sso_provider_unavailable") from None
        if answer.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise InvalidToken(f"The OpenID provider refused the authorization code "
                               f"({str(error or answer.status_code)[:100]}).",
                               code="sso_code_refused")
        if not isinstance(body.get("id_token"), str):
            raise InvalidToken("The OpenID provider sent no ID token.", code="sso_code_refused")
        return body


def new_http() -> httpx.AsyncClient:
    """The HTTP client of the provider's calls (no redirects followed, bounded time)."""
    import httpx

    return httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)

