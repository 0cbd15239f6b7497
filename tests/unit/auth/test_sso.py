"""Single sign-on's pure parts: the group rules' shape, what is taken for a JSON Web Token, the
PKCE pair (the flow itself runs against a real provider: tests/e2e/test_sso.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from pydantic import ValidationError

from inferd.auth.keys import generate_key
from inferd.auth.oidc import looks_like_jwt, pkce_pair
from inferd.auth.sso import SsoRules, rules_view


def test_a_rule_gives_a_team_role_or_an_installation_role() -> None:
    rules = SsoRules.model_validate({"rules": [
        {"group": "ml", "team": "ml"},
        {"group": "leads", "team": "ml", "role": "owner"},
        {"group": "admins", "installation_role": "admin"}]})
    assert rules_view(rules)["rules"] == [
        {"group": "ml", "team": "ml"}, {"group": "leads", "team": "ml", "role": "owner"},
        {"group": "admins", "installation_role": "admin"}]
    for bad in ({"group": "g"}, {"group": "g", "team": "t", "installation_role": "admin"},
                {"group": "g", "role": "owner", "installation_role": "admin"},
                {"group": "", "team": "t"}, {"group": "g", "team": "t", "role": "boss"},
                {"group": "g", "team": "t", "extra": 1}):
        with pytest.raises(ValidationError):
            SsoRules.model_validate({"rules": [bad]})


def test_only_a_compact_jwt_is_taken_for_a_provider_token() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")
    assert not looks_like_jwt(generate_key())
    assert not looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0")
    assert not looks_like_jwt("eyJ" + "a" * 20_000 + ".b.c")  # too long for a token


def test_the_pkce_challenge_is_the_verifier_s_sha256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert challenge == digest.rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier
