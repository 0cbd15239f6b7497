"""Replica URLs must point inside the allow-list of hosts and networks."""

from __future__ import annotations

import pytest

from inferd.errors import InvalidRequest
from inferd.outbound import HostAllowList
from inferd.settings import DEFAULT_REPLICA_NETWORKS


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1", "http://localhost:8000", "http://10.1.2.3:8000/v1",
    "https://192.168.1.20", "http://172.20.0.5:9000", "http://[::1]:8000/v1",
])
async def test_default_allows_loopback_and_private_networks(url: str) -> None:
    await HostAllowList(DEFAULT_REPLICA_NETWORKS).check(url)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
    "http://8.8.8.8/v1", "http://172.32.0.1/", "ftp://127.0.0.1/", "file:///etc/passwd",
    "http://user:secret@127.0.0.1:8000/", "http://127.0.0.1:99999/", "not a url",
])
async def test_default_refuses_everything_else(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await HostAllowList(DEFAULT_REPLICA_NETWORKS).check(url)
    assert info.value.status == 400 and info.value.param == "url"


async def test_names_suffixes_and_resolution() -> None:
    allow = HostAllowList(["gpu-1.example.internal", "*.engines.test", "127.0.0.0/8"])
    await allow.check("http://gpu-1.example.internal:8000")
    await allow.check("http://a.b.engines.test")
    await allow.check("http://localhost:8000")  # resolves to loopback
    with pytest.raises(InvalidRequest):
        await HostAllowList(["10.0.0.0/8"]).check("http://localhost:1")  # resolves outside
