"""Audio and moderations pass through to an ``http`` replica that declares them, with the
official ``openai`` SDK as the client; without such a model the errors say so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
import yaml

from tests.fake_audio import FakeAudio, silent_wav
from tests.helpers import InferdProcess


async def test_audio_and_moderations_through_a_replica(tmp_path: Path) -> None:
    fake = FakeAudio()
    async with fake as url:
        config = tmp_path / "gateway.yaml"
        replica = {"kind": "http", "url": url, "upstream_model": "whisper-x"}
        config.write_text(yaml.safe_dump({"health_check_interval": 0.5, "remote_models": [
            {"name": "ears", "replicas": [
                {**replica, "options": {"capabilities": ["audio.transcriptions",
                                                         "audio.speech", "moderations"]}}]},
            {"name": "plain", "replicas": [replica]}]}))
        server = InferdProcess(tmp_path / "gw", "--config", str(config), "--no-bundled",
                               env={"INFERD_AUTH": "off"})
        await asyncio.to_thread(server.start)
        try:
            client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                        max_retries=0)
            text = await client.audio.transcriptions.create(
                model="ears", file=("hello.wav", silent_wav(), "audio/wav"))
            assert text.text == f"heard {len(silent_wav())} bytes"
            assert fake.requests[-1]["model"] == "whisper-x"
            assert fake.requests[-1]["filename"] == "hello.wav"
            speech = await client.audio.speech.create(model="ears", input="hi", voice="alloy")
            assert (await speech.aread()).startswith(b"RIFF")
            assert fake.requests[-1]["model"] == "whisper-x"
            moderation = await client.moderations.create(input=["kill it", "hello"])
            assert moderation.model == "ears"  # the only model that serves it was picked
            assert [r.flagged for r in moderation.results] == [True, False]
            with pytest.raises(openai.BadRequestError) as info:  # a model without it
                await client.moderations.create(model="plain", input="x")
            assert info.value.body["param"] == "model"  # type: ignore[index]
            with pytest.raises(openai.NotFoundError):
                await client.audio.speech.create(model="nope", input="hi", voice="alloy")
            metrics = await asyncio.to_thread(_metrics, server.url)
            assert 'endpoint="audio.transcriptions"' in metrics
            assert 'endpoint="moderations"' in metrics
        finally:
            await asyncio.to_thread(server.stop)


def _metrics(url: str) -> str:
    import httpx

    return httpx.get(url + "/metrics").text


def test_no_model_serves_it(http: object) -> None:
    import httpx

    assert isinstance(http, httpx.Client)
    response = http.post("/v1/moderations", json={"input": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    speech = http.post("/v1/audio/speech", json={"model": "smollm2-135m-instruct",
                                                 "input": "x", "voice": "alloy"})
    assert speech.status_code == 400 and speech.json()["error"]["param"] == "model"
    upload = http.post("/v1/audio/transcriptions", data={"model": "x"})
    assert upload.status_code == 400
