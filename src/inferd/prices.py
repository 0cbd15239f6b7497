"""Prices per model and the cost of a request (docs/operating/prices.md).

A ``Price`` is set per model (config file ``models``/``remote_models`` entries, the admin API,
the UI) and may be overridden per replica (``options.price``). ``PriceBook`` holds them in
memory (filled by the replica catalogue on each sync) so that the cost of a request is computed
when its usage record is made, without a database read on the request path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferd.jsontypes import JsonObject

# The highest price accepted, per million tokens, per image or per step, in the currency unit. A
# price has at most 9 decimal places, so under this bound at most 15 significant digits: stored
# as a JSON number (a double), it reads back as given.
MAX_PRICE = Decimal(1_000_000)
MILLION = Decimal(1_000_000)


class TokenUsage(Protocol):
    """The tokens a request used, as its usage reports them (``inferd.schemas.answers.Usage``)."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int | None: ...

    @property
    def cached_tokens(self) -> int: ...


def _amount() -> Any:
    return Field(
        default=Decimal(0), ge=0, le=MAX_PRICE, allow_inf_nan=False, max_digits=16, decimal_places=9
    )


class Price(BaseModel):
    """What a model costs: input, output and cached input tokens per million, per image, and
    per diffusion step of each image."""

    model_config = ConfigDict(extra="forbid")

    input: Decimal = _amount()  # per million prompt tokens (not cached)
    output: Decimal = _amount()  # per million completion tokens
    # per million prompt tokens read from the prompt cache
    # (``usage.prompt_tokens_details.cached_tokens``); None: the input price
    cached_input: Decimal | None = Field(
        default=None, ge=0, le=MAX_PRICE, allow_inf_nan=False, max_digits=16, decimal_places=9
    )
    image: Decimal = _amount()  # per picture made (image generation)
    step: Decimal = _amount()  # per denoising step run for each picture (image generation)

    def view(self) -> dict[str, float | None]:
        """As the API shows and stores it (JSON numbers)."""
        return {
            "input": float(self.input),
            "output": float(self.output),
            "cached_input": None if self.cached_input is None else float(self.cached_input),
            "image": float(self.image),
            "step": float(self.step),
        }

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        images: int = 0,
        steps: int = 0,
    ) -> float:
        """The cost of one request: cached prompt tokens at the cached price, the rest of the
        prompt at the input price, completion tokens at the output price, images each, and
        ``steps`` (the denoising steps run, summed over the pictures) each."""
        cached = max(0, min(int(cached_tokens), int(prompt_tokens)))
        cached_price = self.input if self.cached_input is None else self.cached_input
        total = (
            Decimal(int(prompt_tokens) - cached) * self.input
            + Decimal(cached) * cached_price
            + Decimal(int(completion_tokens)) * self.output
        ) / MILLION + Decimal(max(0, int(images))) * self.image + Decimal(
            max(0, int(steps))
        ) * self.step
        return float(total)


def parse_price(value: Any, param: str = "price") -> Price | None:
    """A stored or given price (an object, or None); ``ValueError`` naming ``param`` if bad."""
    if value is None:
        return None
    if isinstance(value, Price):
        return value
    try:
        return Price.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (param, *first["loc"]))
        raise ValueError(
            f"{where}: {first['msg']} (prices are non-negative numbers of at "
            f"most {MAX_PRICE:,} per million tokens, per image or per step)"
        ) from None


def check_price(options: JsonObject | None) -> JsonObject | None:
    """A replica's ``options.price`` (its override of the model's price), validated and kept
    as JSON numbers."""
    if options is None or options.get("price") is None:
        return options
    price = parse_price(options["price"], "options.price")
    assert price is not None
    return {**options, "price": {**price.view()}}


class PriceBook:
    """The prices of every model and replica override, as the catalogue last read them."""

    def __init__(self) -> None:
        self.models: dict[str, Price] = {}  # model name (and alias) -> price
        self.replicas: dict[str, Price] = {}  # replica id -> its override
        self.replica_models: dict[str, str] = {}  # replica id -> its model

    def replace(
        self, models: dict[str, Price], replicas: dict[str, Price], replica_models: dict[str, str]
    ) -> None:
        """Swap in a whole new set (readers see the old or the new one, never a mix)."""
        self.models, self.replicas, self.replica_models = models, replicas, replica_models

    def set_model(self, name: str, price: Price | None) -> None:
        models = dict(self.models)
        if price is None:
            models.pop(name, None)
        else:
            models[name] = price
        self.models = models

    def price(self, model: str, replica: str | None) -> Price | None:
        """The price that applies to a request to ``model`` served by ``replica``: the
        replica's override, else the price of the model the replica serves, else the
        requested model's."""
        if replica is not None:
            override = self.replicas.get(replica)
            if override is not None:
                return override
            served = self.replica_models.get(replica)
            if served is not None and served in self.models:
                return self.models[served]
        return self.models.get(model)

    def worst_cost(self, model: str, prompt: int | None, completion: int) -> Decimal:
        """The most a request to ``model`` of ``prompt`` input tokens and ``completion``
        output tokens may cost, whichever of its replicas serves it (``prompt`` None: the
        split is unknown, every token at the higher of the two prices)."""
        prices = [self.models[model]] if model in self.models else []
        prices += [price for replica, price in self.replicas.items()
                   if self.replica_models.get(replica) == model]
        if prompt is None:
            worst = (max(p.input, p.output) * completion for p in prices)
        else:
            worst = (p.input * prompt + p.output * completion for p in prices)
        return max(worst, default=Decimal(0)) / MILLION

    def worst_image_cost(self, model: str, images: int, steps: int = 0) -> Decimal:
        """The most ``images`` pictures of at most ``steps`` denoising steps each made by
        ``model`` may cost, whichever of its replicas makes them: each at the highest price per
        image plus ``steps`` times the highest price per step, of the model and its replicas."""
        prices = [self.models[model]] if model in self.models else []
        prices += [price for replica, price in self.replicas.items()
                   if self.replica_models.get(replica) == model]
        image = max((p.image for p in prices), default=Decimal(0))
        step = max((p.step for p in prices), default=Decimal(0))
        return Decimal(max(0, images)) * (image + Decimal(max(0, steps)) * step)

    def cost(
        self,
        model: str,
        replica: str | None,
        usage: TokenUsage | None,
        images: int | None = None,
        steps: int | None = None,
    ) -> float:
        """The cost of a finished request (0 when no price applies); ``steps``: the denoising
        steps its pictures ran, summed over them."""
        price = self.price(model, replica)
        if price is None:
            return 0.0
        return price.cost(
            0 if usage is None else usage.prompt_tokens,
            0 if usage is None else usage.completion_tokens or 0,
            0 if usage is None else usage.cached_tokens,
            int(images or 0),
            int(steps or 0),
        )
