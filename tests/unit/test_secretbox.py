"""Secrets at rest: Fernet encryption with one or more keys, rotation, and clear refusals."""

from __future__ import annotations

import pytest

from inferd.redact import redact_url
from inferd.secretbox import PREFIX, SecretBox, SecretKeyError, new_key, parse_keys
from inferd.settings import load_settings


def test_sealed_values_are_encrypted_and_open_again() -> None:
    box = SecretBox([new_key()])
    sealed = box.seal("sk-upstream-1")
    assert sealed.startswith(PREFIX) and "sk-upstream-1" not in sealed
    assert box.seal("sk-upstream-1") != sealed  # a fresh nonce each time
    assert box.open(sealed) == "sk-upstream-1"
    assert box.open("plain-from-before") == "plain-from-before"
    assert box.seal("") == ""


def test_without_a_key_secrets_stay_plain_and_encrypted_ones_are_refused() -> None:
    plain = SecretBox()
    assert not plain.encrypts and plain.seal("sk-1") == "sk-1" and plain.open("sk-1") == "sk-1"
    with pytest.raises(SecretKeyError, match="INFERD_SECRET_KEY is not set"):
        plain.open(SecretBox([new_key()]).seal("sk-1"))
    with pytest.raises(SecretKeyError):
        plain.rotate("sk-1")


def test_rotation_moves_every_value_to_the_new_key() -> None:
    old, new = new_key(), new_key()
    stored = SecretBox([old]).seal("sk-1")
    both = SecretBox([new, old])
    assert both.open(stored) == "sk-1"
    rotated = both.rotate(stored)
    assert SecretBox([new]).open(rotated) == "sk-1"
    assert SecretBox([new]).open(both.rotate("plain")) == "plain"
    with pytest.raises(SecretKeyError, match="does not decrypt"):
        SecretBox([old]).open(rotated)
    with pytest.raises(SecretKeyError):
        SecretBox([new]).rotate(stored)  # the old key is needed to rotate


def test_the_setting_takes_comma_separated_keys_and_refuses_bad_ones() -> None:
    first, second = new_key(), new_key()
    assert parse_keys(f" {first}, {second} ") == [first, second]
    assert parse_keys("") == []
    with pytest.raises(ValueError, match="key 2 is not a Fernet key"):
        parse_keys(f"{first},not-a-key")
    with pytest.raises(ValueError, match="secret_key"):
        load_settings(secret_key="short")
    settings = load_settings(secret_key=first)
    assert first not in repr(settings)


@pytest.mark.parametrize(("url", "shown"), [
    ("http://h:8000/v1?token=abc&x=1", "http://h:8000/v1?token=***&x=***"),
    ("http://user:pass@h/v1", "http://***@h/v1"),
    ("https://h/v1?sk-bare-token", "https://h/v1?***"),
    ("http://h/v1#frag", "http://h/v1#***"),
    ("http://h:8000/v1", "http://h:8000/v1"),
])
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
