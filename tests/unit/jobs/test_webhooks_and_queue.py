"""Webhook signing (Standard Webhooks) and the in-process queue's order."""

from __future__ import annotations

import time

import pytest

from inferd.errors import InvalidRequest
from inferd.ids import new_webhook_secret
from inferd.jobs.queue import InProcessQueue, QueuedJob
from inferd.jobs.requests import check_webhook_url, idempotency_scope, request_hash
from inferd.jobs.webhooks import sign, verify
from inferd.outbound import WEBHOOK, HostAllowList


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
            == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_verify_accepts_a_fresh_signature_and_refuses_a_changed_body() -> None:
    secret = new_webhook_secret()
    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": sign(secret, "msg_1", ts, b"{}")}
    assert verify(secret, headers, b"{}")
    assert not verify(secret, headers, b'{"a":1}')
    assert not verify(new_webhook_secret(), headers, b"{}")


@pytest.mark.parametrize("timestamp", ["²", "١٢", "+1", " 1", "1_000", "", "soon"])
def test_verify_refuses_a_timestamp_that_is_not_ascii_digits(timestamp: str) -> None:
    secret = new_webhook_secret()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": timestamp,
               "webhook-signature": sign(secret, "msg_1", int(time.time()), b"{}")}
    assert verify(secret, headers, b"{}") is False


def test_verify_refuses_the_current_time_in_other_digits() -> None:
    """Arabic-Indic digits are a number to ``int()``, but the signed text was ASCII: the
    header as received is not what was signed."""
    secret = new_webhook_secret()
    ts = int(time.time())
    arabic = str(ts).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    headers = {"webhook-id": "msg_1", "webhook-timestamp": arabic,
               "webhook-signature": sign(secret, "msg_1", ts, b"{}")}
    assert verify(secret, headers, b"{}") is False
    assert verify(secret, {**headers, "webhook-timestamp": str(ts)}, b"{}") is True


async def test_webhook_url_must_be_http() -> None:
    allow = HostAllowList(["public"], WEBHOOK)
    assert await check_webhook_url("https://93.184.216.34/hook", allow) == \
        "https://93.184.216.34/hook"
    assert await check_webhook_url(None, allow) is None
    for bad in ("ftp://example.com/x", "file:///etc/passwd", "example.com", "http://"):
        with pytest.raises(InvalidRequest) as info:
            await check_webhook_url(bad, allow)
        assert info.value.param == "webhook_url"


def test_request_hash_ignores_key_order_and_scope_is_per_owner() -> None:
    assert request_hash("/v1/x", {"a": 1, "b": 2}) == request_hash("/v1/x", {"b": 2, "a": 1})
    assert request_hash("/v1/x", {"a": 1}) != request_hash("/v1/x", {"a": 2})
    assert idempotency_scope("k1", "same") != idempotency_scope("k2", "same")


async def test_queue_serves_higher_priority_first_then_oldest_and_dedupes() -> None:
    queue = InProcessQueue()
    await queue.put(QueuedJob("a", "m", 0))
    await queue.put(QueuedJob("b", "m", 5))
    await queue.put(QueuedJob("c", "m", 0))
    await queue.put(QueuedJob("a", "m", 0))  # already waiting: not twice
    await queue.put(QueuedJob("x", "other", 9))
    assert queue.depth("m") == 3
    order = [(await queue.get("m")).job.id for _ in range(3)]
    assert order == ["b", "a", "c"]
    assert queue.depth("m") == 0 and queue.depth() == 1
