"""The bodies the request log keeps for a key with ``log_bodies``: stored and read back on
every store (SQLite, PostgreSQL, MariaDB), redacted per ``INFERD_REQUEST_LOG_REDACT``, cut at
the size limit with a marker, a stream's chunks assembled into one answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.auth.keys import principal_from_row
from inferd.reqlog import RequestLog
from inferd.request_bodies import TRUNCATED, assemble, body_text, cap, luhn, mask
from inferd.schemas.openai import ChatCompletionRequest
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.request_log import RequestLogStore, RequestQuery, RequestRecord

NOW = 1_765_000_000.0
SECRET = ("mail jane.doe@example.com, card 4111 1111 1111 1111, "
          "Authorization: Bearer abcdef0123456789xyz, key sk-inferd-AbCdEf0123456789ghij")


def record(request_id: str, request_body: str | None,
           response_body: str | None) -> RequestRecord:
    return RequestRecord(NOW, request_id, "1", "svc", "m1", "local:m1", "chat", False, 200,
                         None, 10.0, None, 5, 7, None, 0.5, 1, "127.0.0.1", "ua", None,
                         request_body, response_body)


async def test_bodies_are_stored_and_read_back(database: Database) -> None:
    store = RequestLogStore(database)
    big = "é" * 40_000  # 80,000 bytes: a TEXT column holds it on every store
    await store.insert_many([record("with", '{"q": "' + big + '"}', '{"a": 1}'),
                             record("without", None, None)])
    log = RequestLog(store, None)
    page = await log.page(RequestQuery())
    rows = {r["request_id"]: r for r in page["data"]}
    assert json.loads(rows["with"]["request_body"]) == {"q": big}
    assert rows["with"]["response_body"] == '{"a": 1}'
    assert rows["without"]["request_body"] is None
    assert rows["without"]["response_body"] is None


def test_mask_replaces_secrets_and_keeps_the_rest() -> None:
    masked = mask(SECRET)
    assert masked == ("mail [email], card [card], Authorization: Bearer [token], "
                      "key [key]")
    assert mask("AWS AKIAIOSFODNN7EXAMPLE") == "AWS [key]"
    # numbers that are no card: failing the Luhn check, a longer run, a decimal fraction
    assert not luhn("4111111111111112")
    kept = ("4111 1111 1111 1112 and 12345678901234567890123 and "
            "[0.4111111111111111, -0.5555555555554444]")
    assert mask(kept) == kept
    assert mask("4111-1111-1111-1111") == "[card]"


def test_cap_cuts_at_bytes_with_a_marker() -> None:
    assert cap("short", 256) == "short"
    text = "ab" + "€" * 200  # 602 bytes
    cut = cap(text, 256)
    head = cut[:cut.index("…[truncated")]
    assert len(head.encode()) <= 256 and text.startswith(head)
    assert cut == head + TRUNCATED.format(len(text.encode()) - len(head.encode()))


def test_redaction_modes() -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "m1", "messages": [{"role": "user", "content": SECRET}]})
    plain = orjson.dumps({"model": "m1", "messages": [
        {"role": "user", "content": SECRET}]}).decode()
    assert json.loads(body_text(request, "none", 65536) or "") == json.loads(plain)
    masked = body_text(request, "mask", 65536) or ""
    assert "jane.doe" not in masked and "4111" not in masked and "sk-inferd" not in masked
    assert json.loads(masked)["messages"][0]["content"] == mask(SECRET)
    hashed = body_text(request, "hash", 65536)
    none = body_text(request, "none", 65536) or ""
    assert hashed == "sha256:" + hashlib.sha256(none.encode()).hexdigest()
    assert body_text(request, "drop", 65536) is None
    assert body_text(None, "none", 65536) is None
    capped = body_text({"text": "x" * 10_000}, "mask", 1000) or ""
    assert capped.startswith('{"text":"xxx') and "…[truncated " in capped
    assert len(capped.encode()) < 1100


def test_a_stream_is_assembled() -> None:
    base: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                            "model": "m1"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "get", "arguments": '{"a"'}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                          "total_tokens": 5}},
    ]
    assert assemble(chunks) == {
        "id": "c1", "created": 1, "model": "m1", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hello", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get", "arguments": '{"a": 1}'}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    text = [{"id": "t", "object": "text_completion", "choices": [{"index": i, "text": t}]}
            for i, t in ((0, "a"), (1, "b"), (0, "c"))]
    assert assemble(text)["choices"] == [
        {"index": 0, "text": "ac", "finish_reason": None},
        {"index": 1, "text": "b", "finish_reason": None}]
    log = RequestLog(None, None, redact="none")
    asked, answered = log.bodies({"q": 1}, chunks)
    assert asked == '{"q":1}'
    assert json.loads(answered or "")["choices"][0]["message"]["content"] == "Hello"


async def test_a_keys_log_bodies_on_every_store(database: Database) -> None:
    admin = KeyAdmin(KeyStore(database))
    keeps = await admin.create(KeySpec(name="keeps", log_bodies=True))
    plain = await admin.create(KeySpec(name="plain"))
    assert keeps["log_bodies"] is True and plain["log_bodies"] is False
    row = await KeyStore(database).get(int(keeps["id"]))
    assert row is not None and principal_from_row(row).log_bodies
    # a change of another field keeps it; null keeps it too; false turns it off
    assert (await admin.update(int(keeps["id"]), KeyUpdate(rpm=5)))["log_bodies"] is True
    assert (await admin.update(int(keeps["id"]),
                               KeyUpdate(log_bodies=None)))["log_bodies"] is True
    off = await admin.update(int(keeps["id"]), KeyUpdate(log_bodies=False))
    assert off["log_bodies"] is False
    row = await KeyStore(database).get(int(keeps["id"]))
    assert row is not None and not principal_from_row(row).log_bodies
