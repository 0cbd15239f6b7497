"""``Auth``'s unmetered copies of principals (forwarded and probe requests)."""

from __future__ import annotations

from typing import Any, cast

from inferd.auth import service
from inferd.auth.principal import OPEN_MODE, Principal
from inferd.auth.service import Auth


def bare_auth() -> Auth:
    """An ``Auth`` whose keys, admin and policy are never reached by ``unmetered``."""
    unused = cast(Any, None)
    return Auth(unused, unused, unused, teams=cast(Any, object()), scim=cast(Any, object()),
                open_mode=OPEN_MODE)


def test_an_unmetered_copy_is_made_once_per_principal_and_again_when_it_is_reloaded() -> None:
    auth = bare_auth()
    key = Principal(key_id="1", scope="user", rpm=5)
    copy = auth.unmetered(key)
    assert copy.metered is False and copy.key_id == "1" and copy.rpm == 5
    assert auth.unmetered(key) is copy
    reloaded = Principal(key_id="1", scope="user", rpm=9)  # the key's limits changed
    again = auth.unmetered(reloaded)
    assert again is not copy and again.rpm == 9 and again.metered is False


def test_the_copies_kept_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(service, "UNMETERED_KEPT", 3)
    auth = bare_auth()
    keys = [Principal(key_id=str(i), scope="user") for i in range(10)]
    copies = [auth.unmetered(k) for k in keys]
    assert len(auth._unmetered) == 3
    assert sorted(auth._unmetered) == ["7", "8", "9"]  # the latest keys stay
    assert auth.unmetered(keys[9]) is copies[9]
    assert auth.unmetered(keys[0]) is not copies[0]  # made again once dropped
    assert len(auth._unmetered) == 3
