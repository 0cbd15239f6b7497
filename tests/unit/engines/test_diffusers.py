"""The diffusers engine in-process, on the tiny random-weight pipeline loaded from disk:
real pictures, determinism by seed, step progress, cancellation between steps, one run at
a time, and refusals."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from inferd.engines.diffusers import DiffusersEngine
from inferd.errors import InvalidRequest, UnsupportedParameter
from inferd.schemas.answers import ImagesAnswer
from inferd.schemas.images import ImageGenerationRequest
from inferd.settings import ModelSpec


@pytest.fixture(scope="module")
def spec(tiny_pipeline: Path) -> ModelSpec:
    # long runs (400 steps) show cancellation between steps
    return ModelSpec(name="tiny-sd", kind="diffusers", path=str(tiny_pipeline), steps=3,
                     size="64x64", max_steps=500)


@pytest.fixture
async def engine(spec: ModelSpec) -> AsyncIterator[DiffusersEngine]:
    engine = DiffusersEngine(spec)
    await engine.start()
    yield engine
    await engine.close()


def request(**fields: Any) -> ImageGenerationRequest:
    return ImageGenerationRequest.model_validate({"model": "tiny-sd", "prompt": "a red cube",
                                                  **fields})


def pictures(result: ImagesAnswer) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in result.data]


@pytest.mark.parametrize(("fmt", "pil_format"),
                         [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_answers_decodable_pictures_of_the_size_and_format_asked(
        engine: DiffusersEngine, fmt: str, pil_format: str) -> None:
    result = await engine.images(request(size="128x64", output_format=fmt, n=2, seed=1))
    images = pictures(result)
    assert len(images) == 2
    assert all(i.format == pil_format and i.size == (128, 64) for i in images)
    assert "size" not in result  # OpenAI's answer names only its own three sizes
    assert result.output_format == fmt
    assert result.usage is not None and result.usage.images == 2 and result.usage.steps == 6


async def test_defaults_come_from_the_model(engine: DiffusersEngine) -> None:
    seen: list[tuple[int, int]] = []

    async def progress(step: int, of: int) -> None:
        seen.append((step, of))

    result = await engine.images(request(), progress)
    assert pictures(result)[0].size == (64, 64)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert isinstance(result.seed, int)


async def test_same_seed_same_picture_other_seed_other_picture(engine: DiffusersEngine) -> None:
    first = await engine.images(request(seed=42))
    again = await engine.images(request(seed=42))
    other = await engine.images(request(seed=43))
    assert first.data[0].b64_json == again.data[0].b64_json
    assert first.data[0].b64_json != other.data[0].b64_json
    assert first.seed == 42


async def test_concurrent_requests_take_turns_and_match_sequential_runs(
        engine: DiffusersEngine) -> None:
    alone = [(await engine.images(request(seed=s))).data[0].b64_json for s in (5, 6, 7)]
    together = await asyncio.gather(*(engine.images(request(seed=s)) for s in (5, 6, 7)))
    assert [r.data[0].b64_json for r in together] == alone


async def test_a_cancelled_generation_stops_between_steps(engine: DiffusersEngine) -> None:
    started = asyncio.Event()

    async def progress(step: int, of: int) -> None:
        if step >= 2:
            started.set()

    before = engine.steps_run
    task = asyncio.create_task(engine.images(request(steps=400, size="256x256"), progress))
    await asyncio.wait_for(started.wait(), 120)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await engine.idle()  # the thread has given up the run
    assert 2 <= engine.steps_run - before < 400
    after = await engine.images(request(seed=3, stream=False))  # and serves the next one
    assert pictures(after)[0].size == (64, 64)


@pytest.mark.parametrize(("fields", "error", "param"), [
    ({"size": "65x64"}, InvalidRequest, "size"),
    ({"size": "4096x64"}, InvalidRequest, "size"),
    ({"frobnicate": 1}, UnsupportedParameter, "frobnicate"),
    ({"stream": True}, UnsupportedParameter, "stream"),
    ({"background": "transparent"}, UnsupportedParameter, "background"),
])
async def test_refuses_what_it_cannot_draw(engine: DiffusersEngine, fields: dict[str, Any],
                                           error: type[Exception], param: str) -> None:
    with pytest.raises(error) as caught:
        await engine.images(request(**fields))
    assert getattr(caught.value, "param", None) == param


def test_the_request_schema_checks_sizes_and_counts() -> None:
    for bad in ({"size": "big"}, {"n": 0}, {"n": 11}, {"prompt": ""}, {"steps": 0},
                {"output_format": "gif"}, {"response_format": "file"}):
        with pytest.raises(ValueError):
            request(**bad)
    assert request(size="auto").dimensions() is None
    assert request(size="320x192").dimensions() == (320, 192)
