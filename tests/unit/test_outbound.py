"""Outbound URL allow-lists: webhook URLs (public addresses only by default), every encoded
form of an internal address, and the check made again when connecting (DNS rebinding)."""

from __future__ import annotations

import pytest

from inferd.errors import InvalidRequest
from inferd.guarded_resolver import GuardedResolver
from inferd.outbound import (
    REPLICA,
    WEBHOOK,
    AddressRefused,
    HostAllowList,
    parse_address,
)
from inferd.settings import JobSettings

DEFAULT_WEBHOOKS = HostAllowList(JobSettings().webhook_allowed_hosts, WEBHOOK)

METADATA_FORMS = [
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/",  # decimal
    "http://0251.0376.0251.0376/",  # octal
    "http://0xa9.0xfe.0xa9.0xfe/",  # hexadecimal parts
    "http://0xa9fea9fe/",  # one hexadecimal number
    "http://169.254.43518/",  # short form: a.b.c16
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",  # the same, in hexadecimal
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://169.254.169.254./",  # trailing dot
]
LOOPBACK_FORMS = [
    "http://127.0.0.1:8000/hook", "http://127.1/", "http://2130706433/", "http://0x7f000001/",
    "http://0177.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://localhost/",
]
OTHER_INTERNAL = [
    "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/", "http://100.64.0.1/",
    "http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/", "http://239.255.255.250/",
    "http://240.0.0.1/", "http://255.255.255.255/", "http://[fe80::1]/", "http://[fc00::1]/",
    "http://[ff02::1]/", "http://[2002:7f00:1::]/",
]


@pytest.mark.parametrize("url", METADATA_FORMS + LOOPBACK_FORMS + OTHER_INTERNAL)
async def test_default_webhook_list_refuses_every_internal_address(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await DEFAULT_WEBHOOKS.check(url)
    assert info.value.status == 400
    assert info.value.param == "webhook_url" and info.value.code == "webhook_url_not_allowed"
    assert "webhook_allowed_hosts" in info.value.message


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "http://8.8.8.8:8080/x",
                                 "http://[2606:4700:4700::1111]/hook"])
async def test_default_webhook_list_allows_public_addresses(url: str) -> None:
    await DEFAULT_WEBHOOKS.check(url)


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("2852039166", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"), ("0xA9FEA9FE", "169.254.169.254"),
    ("[::ffff:10.0.0.1]", "10.0.0.1"), ("fe80::1%eth0", "fe80::1"),
    ("example.com", None), ("1.2.3.4.5", None), ("12.ab", None),
])
def test_addresses_are_normalised(host: str, address: str | None) -> None:
    parsed = parse_address(host)
    assert (None if parsed is None else str(parsed)) == address


async def test_tests_may_allow_loopback_and_credentials_are_refused() -> None:
    allow = HostAllowList(["public", "127.0.0.0/8"], WEBHOOK)
    await allow.check("http://127.0.0.1:9/hook")
    await allow.check("http://127.1:9/hook")
    with pytest.raises(InvalidRequest):
        await allow.check("http://169.254.169.254/")
    with pytest.raises(InvalidRequest, match="credentials"):
        await allow.check("http://user:pw@127.0.0.1/")


@pytest.mark.parametrize("url", [
    "http://93.184.216.34%25.attacker.test/hook",  # '%' ended the host at the address check
    "http://93.184.216.34%.attacker.test/hook",
    "http://[2606:4700:4700::1111%25eth0]/hook",  # a zone id
    "http://b\u00fccher.test/hook",  # non-ASCII: clients encode it each their own way
    "http://8.8.8.8\\.attacker.test/",
    "http://hook test/",
])
async def test_hosts_with_characters_no_host_name_holds_are_refused(url: str) -> None:
    allow = HostAllowList(["public", "*.test"], WEBHOOK)
    with pytest.raises(InvalidRequest) as info:
        await allow.check(url)
    assert info.value.code == "webhook_url_not_allowed" and info.value.param == "webhook_url"
    assert "host" in info.value.message
    with pytest.raises(AddressRefused):
        await allow.resolve("93.184.216.34%.attacker.test", 80)


@pytest.mark.parametrize("url", ["http://hook_1.test:8080/x", "http://[2606:4700:4700::1111]/",
                                 "http://xn--bcher-kva.test/", "https://HOOK.test./"])
async def test_host_names_addresses_and_encoded_names_are_valid(url: str) -> None:
    await HostAllowList(["public", "*.test", "hook_1.test"], WEBHOOK).check(url)


async def test_a_name_is_checked_again_when_connecting(fake_dns: dict[str, list[str]]) -> None:
    allow = HostAllowList(["public"], WEBHOOK)
    fake_dns["hook.test"] = ["93.184.216.34"]
    await allow.check("http://hook.test/x")
    assert await allow.resolve("hook.test", 80) == ["93.184.216.34"]
    fake_dns["hook.test"] = ["93.184.216.34", "169.254.169.254"]  # rebound (partly)
    with pytest.raises(AddressRefused):
        await allow.resolve("hook.test", 80)
    with pytest.raises(AddressRefused):
        await GuardedResolver(allow).resolve("hook.test", 80)
    with pytest.raises(InvalidRequest):
        await allow.check("http://hook.test/x")


async def test_named_hosts_are_trusted_by_name(fake_dns: dict[str, list[str]]) -> None:
    allow = HostAllowList(["gpu.test", "*.engines.test"], REPLICA)
    fake_dns["gpu.test"] = ["10.1.2.3"]
    fake_dns["a.engines.test"] = ["10.1.2.4"]
    assert await allow.resolve("gpu.test", 80) == ["10.1.2.3"]
    assert [r["host"] for r in await GuardedResolver(allow).resolve("a.engines.test", 80)] == \
        ["10.1.2.4"]
    with pytest.raises(AddressRefused):
        await allow.resolve("other.test", 80)  # not named, and it does not resolve


@pytest.mark.parametrize("url", ["http://[::1", "http://[fd00::1/v1", "http://]x[/"])
async def test_a_malformed_url_is_a_400_not_a_crash(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await HostAllowList(["127.0.0.0/8"], REPLICA).check(url)
    assert info.value.status == 400 and info.value.code == "replica_url_not_allowed"
