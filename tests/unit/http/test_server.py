"""``inferd.http.server``: what it uses of uvicorn is there, and a turn's writes go out as one."""

from __future__ import annotations

import asyncio
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferd.http.server import CoalescingTransport, guarded_protocol, uvicorn_internals_missing

ROOT = Path(__file__).resolve().parents[3]


def test_the_installed_uvicorn_has_every_internal_the_protocol_uses() -> None:
    assert uvicorn_internals_missing() == []


def test_uvicorn_is_pinned_to_the_release_series_the_protocol_was_checked_against() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = Requirement(next(d for d in deps if d.startswith("uvicorn")))
    bounds = {spec.operator: Version(spec.version) for spec in pin.specifier}
    assert set(bounds) == {">=", "<"}  # a lower and an upper bound: one minor series
    assert bounds["<"].release[:2] == (bounds[">="].major, bounds[">="].minor + 1)
    assert version("uvicorn") in pin.specifier  # what is installed is of that series
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert f"uvicorn=={version('uvicorn')}" in constraints


def test_a_missing_internal_stops_the_server_at_start_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "on_response_complete")
    assert uvicorn_internals_missing() == ["HttpToolsProtocol.on_response_complete()"]
    with pytest.raises(RuntimeError, match="on_response_complete"):
        guarded_protocol(64 * 1024, 10.0, 30.0, 500.0)


class Recording:
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_the_writes_of_one_turn_of_the_loop_go_out_in_one_call() -> None:
    raw = Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert raw.writes == []  # not yet: the turn goes on
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"next"]  # a later turn: a write of its own
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest passes through


async def test_what_is_held_goes_out_before_a_close_or_an_end_of_writing() -> None:
    for end in ("close", "write_eof"):
        raw = Recording()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"head")
        transport.write(b"body")
        getattr(transport, end)()
        assert raw.writes == [b"headbody"]
        assert raw.closed or raw.eof
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert raw.writes == [b"headbody"]  # nothing twice


async def test_nothing_is_written_to_a_connection_lost_meanwhile() -> None:
    raw = Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"late")
    raw.closed = True  # the client went away before the end of the turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert raw.writes == []
