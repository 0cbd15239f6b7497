"""The wire model of ``POST /v1/images/generations`` (OpenAI's shape, plus ``seed``, ``steps``
and ``guidance_scale`` as extensions), and the shape of its answer.

Unknown fields are kept (an ``http`` replica may honour them); the local diffusers engine
refuses the ones it cannot honour, by name.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferd.errors import InvalidRequest
from inferd.schemas.answers import ImageData, ImageInputDetails, ImagesAnswer, ImagesUsage

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# The sizes OpenAI's answer may name; other sizes are left out of ``size`` in the answer.
OPENAI_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})
_SIZE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
# What the cost of a request is reckoned with when its model does not say its defaults (a
# remote replica): the defaults of a ``kind: diffusers`` model.
DEFAULT_STEPS = 30
DEFAULT_SIZE = "512x512"


def parse_size(size: str) -> tuple[int, int]:
    """``(width, height)`` of a ``"WIDTHxHEIGHT"`` string."""
    width, height = size.split("x")
    return int(width), int(height)


def image_units(n: int, steps: int, width: int, height: int) -> int:
    """The cost of a request in image units: steps x megapixels x pictures, rounded up."""
    return math.ceil(n * steps * width * height / 1_000_000)


def check_bounds(model: str, steps: int, width: int, height: int, max_steps: int | None,
                 max_size: str | None) -> None:
    """400 naming the field and the bound when a request asks more of ``model`` than its
    ``max_steps`` or ``max_size`` (at most that many pixels, no side over its longer side)."""
    if max_steps is not None and steps > max_steps:
        raise InvalidRequest(f"steps must be at most {max_steps} for the model '{model}'; got "
                             f"{steps}.", param="steps", code="steps_too_large")
    if max_size is not None:
        most_w, most_h = parse_size(max_size)
        if width * height > most_w * most_h or max(width, height) > max(most_w, most_h):
            raise InvalidRequest(
                f"size must be at most {max_size} ({most_w * most_h} pixels, no side over "
                f"{max(most_w, most_h)}) for the model '{model}'; got {width}x{height}.",
                param="size", code="size_too_large")


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1, max_length=32000)
    model: str = ""  # "" = the first model that generates images
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = None  # "WIDTHxHEIGHT" or "auto"; None = the model's default
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    user: str | None = None
    # extensions
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    steps: int | None = Field(default=None, ge=1, le=500)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=100.0)
    negative_prompt: str | None = Field(default=None, max_length=32000)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is None or value == "auto" or _SIZE.match(value):
            return value
        raise ValueError("size must be 'WIDTHxHEIGHT' (e.g. '512x512') or 'auto'")

    def dimensions(self) -> tuple[int, int] | None:
        """``(width, height)`` asked for, or None for the model's default."""
        if self.size is None or self.size == "auto":
            return None
        match = _SIZE.match(self.size)
        assert match is not None  # checked by the validator
        return int(match.group(1)), int(match.group(2))

    @property
    def media_type(self) -> str:
        return IMAGE_FORMATS[self.output_format]


def images_response(created: int, data: list[ImageData], *, size: str,
                    output_format: str, steps: int | None = None,
                    seed: int | None = None) -> ImagesAnswer:
    """OpenAI's ``ImagesResponse``; ``usage`` counts images (and inference steps) beside
    OpenAI's token fields (always 0 here)."""
    usage = ImagesUsage(images=len(data), input_tokens=0, output_tokens=0, total_tokens=0,
                        input_tokens_details=ImageInputDetails(text_tokens=0, image_tokens=0))
    if steps is not None:
        usage.steps = steps * len(data)
    answer = ImagesAnswer(created=created, data=data, output_format=output_format, usage=usage)
    if size in OPENAI_SIZES:
        answer.size = size
    if seed is not None:
        answer.seed = seed
    return answer


def image_usage(result: ImagesAnswer) -> tuple[int, int]:
    """``(images, steps)`` of an images answer (any server's: data counted when no usage)."""
    usage = result.usage
    images = usage.images if usage is not None else None
    if images is None:
        images = len(result.data)
    steps = usage.steps if usage is not None else None
    return images, steps or 0
