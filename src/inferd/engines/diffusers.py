"""The ``diffusers`` engine: a Stable-Diffusion-style pipeline folder on disk, in this process.

A diffusers pipeline is not safe to call from two threads at once, so each loaded pipeline
owns one thread and runs one generation at a time; later requests wait their turn. The
pipeline's ``callback_on_step_end`` hook reports every denoising step back to the event loop
(``progress(step, of)``) and stops the run between two steps once the request is cancelled
(the client left, or its job was cancelled), so a cancelled generation frees the thread
within one step.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from inferd.engines.base import Engine, ImageDefaults, ModelInfo, Progress
from inferd.errors import InvalidRequest, UnsupportedParameter
from inferd.schemas.answers import ImageData, ImagesAnswer
from inferd.schemas.images import ImageGenerationRequest, check_bounds, images_response
from inferd.settings import ModelSpec

log = logging.getLogger("inferd.engines")

# Fields that do not change what this engine draws.
IGNORABLE_FIELDS = frozenset({"user", "moderation", "quality", "style"})
MAX_SIDE = 2048
SIDE_MULTIPLE = 8  # the VAE works on 8x8 pixel blocks


class GenerationStopped(Exception):
    """Raised inside the pipeline's thread to end a cancelled generation between steps."""


@dataclass
class Plan:
    """One generation, with every default filled in."""

    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    output_format: str
    quality: int


def _side(value: int, param: str) -> int:
    if value % SIDE_MULTIPLE or not SIDE_MULTIPLE <= value <= MAX_SIDE:
        raise InvalidRequest(f"Image sides must be multiples of {SIDE_MULTIPLE} from "
                             f"{SIDE_MULTIPLE} to {MAX_SIDE} pixels; got {value}.",
                             param=param, code="invalid_size")
    return value


class DiffusersEngine(Engine):
    """Generates images with a diffusers pipeline loaded from ``spec.path``."""

    kind = "diffusers"
    capabilities = frozenset({"images"})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self._pipeline: Any = None
        self.steps_run = 0  # denoising steps run since start (written by the pipeline thread)
        self._stops: set[threading.Event] = set()  # one per generation queued or running
        self._thread = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"diffusers-{spec.name}")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pipeline = await loop.run_in_executor(self._thread, self._load)

    def _load(self) -> Any:
        from diffusers import AutoPipelineForText2Image

        pipeline = AutoPipelineForText2Image.from_pretrained(self.spec.path)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    async def close(self) -> None:
        for stop in list(self._stops):  # a run in progress ends at its next step
            stop.set()
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._pipeline = None

    def ready(self) -> bool:
        return self._pipeline is not None

    async def idle(self) -> None:
        """Return once the pipeline's thread has finished everything handed to it so far."""
        await asyncio.get_running_loop().run_in_executor(self._thread, lambda: None)

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities,
                         images=ImageDefaults(steps=self.spec.steps, size=self.spec.size,
                                              guidance_scale=self.spec.guidance_scale,
                                              max_steps=self.spec.max_steps,
                                              max_size=self.spec.max_size))

    def plan(self, request: ImageGenerationRequest) -> Plan:
        """Check ``request`` against what this engine can do and fill in the defaults."""
        extra = request.model_extra or {}
        # no partial pictures are streamed: "stream": false is what every answer does anyway
        extras = {k for k in extra if not (k == "stream" and not extra[k])} - IGNORABLE_FIELDS
        if extras:
            name = sorted(extras)[0]
            raise UnsupportedParameter(f"Unrecognized request argument supplied: {name}",
                                       param=name)
        if request.background not in (None, "auto", "opaque"):
            raise UnsupportedParameter(f"The model '{self.name}' draws opaque images only.",
                                       param="background")
        size = request.dimensions()
        if size is None:
            width, height = (int(v) for v in self.spec.size.split("x"))
        else:
            width, height = _side(size[0], "size"), _side(size[1], "size")
        steps = request.steps or self.spec.steps
        check_bounds(self.name, steps, width, height, self.spec.max_steps, self.spec.max_size)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        return Plan(prompt=request.prompt, negative_prompt=request.negative_prompt, n=request.n,
                    width=width, height=height, steps=steps,
                    guidance_scale=(self.spec.guidance_scale if request.guidance_scale is None
                                    else request.guidance_scale),
                    seed=seed, output_format=request.output_format,
                    quality=90 if request.output_compression is None
                    else request.output_compression)

    async def images(self, request: ImageGenerationRequest,
                     progress: Progress | None = None) -> ImagesAnswer:
        plan = self.plan(request)
        if self._pipeline is None:
            raise InvalidRequest(f"The model '{self.name}' is not loaded.")
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        stop = threading.Event()
        self._stops.add(stop)

        def on_step(step: int, of: int) -> None:  # in the pipeline's thread
            loop.call_soon_threadsafe(steps.put_nowait, (step, of))

        created = int(time.time())
        # nobody to tell: the thread need not wake the event loop at every step
        report = on_step if progress is not None else None
        future = loop.run_in_executor(self._thread, self._generate, plan, stop, report)
        future.add_done_callback(lambda _: steps.put_nowait(None))
        try:
            while (item := await steps.get()) is not None:
                if progress is not None:
                    await progress(*item)
            pictures = await future
        except BaseException:
            stop.set()  # the thread ends the run at its next step
            raise
        finally:
            self._stops.discard(stop)
        data = [ImageData(b64_json=base64.b64encode(p).decode()) for p in pictures]
        return images_response(created, data, size=f"{plan.width}x{plan.height}",
                               output_format=plan.output_format, steps=plan.steps,
                               seed=plan.seed)

    def _generate(self, plan: Plan, stop: threading.Event,
                  on_step: Callable[[int, int], None] | None) -> list[bytes]:
        """Run the pipeline (in its own thread) and encode the pictures."""
        import torch

        if stop.is_set():
            raise GenerationStopped
        pipeline = self._pipeline

        def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]
                     ) -> dict[str, Any]:
            self.steps_run += 1
            if stop.is_set():
                raise GenerationStopped
            if on_step is not None:
                on_step(step + 1, plan.steps)
            return kwargs

        generator = torch.Generator(device="cpu").manual_seed(plan.seed)
        with torch.inference_mode():
            output = pipeline(prompt=plan.prompt, negative_prompt=plan.negative_prompt,
                              num_images_per_prompt=plan.n, width=plan.width,
                              height=plan.height, num_inference_steps=plan.steps,
                              guidance_scale=plan.guidance_scale, generator=generator,
                              callback_on_step_end=step_end)
        return [encode(image, plan.output_format, plan.quality) for image in output.images]


def encode(image: Any, output_format: str, quality: int) -> bytes:
    """A PIL image as PNG, JPEG or WebP bytes."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.convert("RGB").save(buffer, format=output_format.upper(), quality=quality)
    return buffer.getvalue()
