"""The cost of a request from its model's price (``inferd.prices``): cached prompt tokens at
the cached price, images each and their steps, a replica's override, the worst case of a
request, and the validation of prices."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from inferd.auth.principal import OPEN_MODE
from inferd.metering import Call, Metering
from inferd.prices import MAX_PRICE, Price, PriceBook, check_price, parse_price
from inferd.schemas.answers import Usage
from inferd.settings import ModelSpec, RemoteModelSpec, ReplicaSpec
from inferd.usage import UsageRecord


def test_tokens_cost_their_price_per_million() -> None:
    price = Price(input=Decimal("0.15"), output=Decimal("0.6"))
    cost = price.cost(prompt_tokens=1000, completion_tokens=500)
    assert cost == float((1000 * Decimal("0.15") + 500 * Decimal("0.6")) / 1_000_000)
    assert cost == 0.00045


def test_cached_prompt_tokens_cost_the_cached_price() -> None:
    price = Price(input=Decimal(2), output=Decimal(8), cached_input=Decimal("0.5"))
    # 1,000 prompt tokens of which 600 read from the cache: 400 x 2 + 600 x 0.5 + 10 x 8
    assert price.cost(1000, 10, cached_tokens=600) == float(Decimal(400 * 2 + 300 + 80) / 1_000_000)
    # without a cached price, cached tokens cost the input price
    assert Price(input=Decimal(2)).cost(1000, 0, cached_tokens=600) == 0.002
    # more cached tokens than prompt tokens (a bad upstream): at most the prompt
    assert price.cost(10, 0, cached_tokens=50) == float(Decimal(10 * Decimal("0.5")) / 10**6)


def test_images_cost_their_price_each() -> None:
    price = Price(image=Decimal("0.04"), input=Decimal(1))
    assert price.cost(100, 0, images=3) == float(Decimal("0.12") + Decimal(100) / 10**6)
    assert Price().cost(10**6, 10**6, images=5) == 0.0


def test_images_cost_their_price_plus_their_steps_at_the_step_price() -> None:
    price = Price(image=Decimal("0.04"), step=Decimal("0.001"))
    # 3 pictures of 20 steps each: 3 x (0.04 + 20 x 0.001); steps are summed over pictures
    assert price.cost(0, 0, images=3, steps=60) == float(
        3 * (Decimal("0.04") + 20 * Decimal("0.001")))
    assert price.cost(0, 0, images=3, steps=60) == 0.18
    assert price.cost(0, 0, images=1, steps=50) == 0.09
    # a price per step alone: the steps cost, the pictures nothing more
    assert Price(step=Decimal("0.5")).cost(0, 0, images=2, steps=8) == 4.0
    book = PriceBook()
    book.replace({"sd": price}, {"r": Price(step=Decimal(1))}, {"r": "sd"})
    assert book.cost("sd", None, None, images=2, steps=10) == float(
        2 * Decimal("0.04") + 10 * Decimal("0.001"))
    assert book.cost("sd", "r", None, images=2, steps=10) == 10.0  # the replica's own price


def test_a_replica_override_wins_over_its_model_price() -> None:
    book = PriceBook()
    model = Price(input=Decimal(1), output=Decimal(2))
    override = Price(input=Decimal(10), output=Decimal(20))
    book.replace({"m": model, "m-alias": model}, {"7": override}, {"7": "m", "8": "m"})
    usage = Usage.of(1_000_000, 1_000_000)
    assert book.cost("m", "7", usage) == 30.0  # the override
    assert book.cost("m", "8", usage) == 3.0  # the model's
    assert book.cost("m-alias", None, usage) == 3.0  # an alias names the model's price
    # a fallback served by a replica of another model costs that model's price
    assert book.cost("other", "8", usage) == 3.0
    assert book.cost("unpriced", "local-1", usage) == 0.0
    cached = Usage.model_validate({
        "prompt_tokens": 1_000_000,
        "completion_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 500_000},
    })
    book.set_model("c", Price(input=Decimal(4), cached_input=Decimal(1)))
    assert book.cost("c", None, cached) == 2.5
    assert book.cost("c", None, None) == 0.0
    book.set_model("c", None)
    assert book.cost("c", None, cached) == 0.0


def test_metering_puts_the_cost_on_the_usage_record() -> None:
    recorded: list[UsageRecord] = []

    class Recorder:
        def record(self, record: UsageRecord) -> None:
            recorded.append(record)

    book = PriceBook()
    book.set_model(
        "m",
        Price(input=Decimal(3), output=Decimal(6), cached_input=Decimal(1), image=Decimal("0.5"),
              step=Decimal("0.01")),
    )
    metering = Metering(None, Recorder(), prices=book)  # type: ignore[arg-type]
    call = Call("chat", "m", OPEN_MODE, stream=False)
    call.images, call.steps = 2, 10
    metering.finish(
        call,
        Usage.model_validate({
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 10},
        }),
        200,
        None,
    )
    assert recorded[0].cost == float(
        (20 * Decimal(3) + 10 + 7 * Decimal(6)) / 10**6 + 2 * Decimal("0.5")
        + 10 * Decimal("0.01")
    )
    metering.finish(
        Call("chat", "free", OPEN_MODE, stream=False),
        Usage.of(30, 7),
        200,
        None,
    )
    assert recorded[1].cost == 0.0


def test_a_record_read_from_an_older_spool_costs_nothing() -> None:
    fields: list[Any] = [
        1.0,
        None,
        None,
        "m",
        None,
        "chat",
        False,
        200,
        None,
        1,
        2,
        3,
        1.0,
        None,
        None,
        None,
        None,
    ]  # the 17 fields before prices
    assert UsageRecord(*fields).cost == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"input": -1},
        {"output": "-0.01"},
        {"input": float(MAX_PRICE) + 1},
        {"image": "nan"},
        {"step": -0.5},
        {"step": "many"},
        {"cached_input": float("inf")},
        {"input": "cheap"},
        {"input": True},
        {"per_token": 1},
        {"input": 0.1234567891},
        {"input": 1e300},
        "free",
        [1, 2],
    ],
)
def test_bad_prices_are_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^price"):
        parse_price(bad)
    with pytest.raises(ValueError, match=r"options\.price"):
        ReplicaSpec(url="http://127.0.0.1:1", options={"price": bad})


def test_a_price_reads_back_as_given_from_its_stored_json_numbers() -> None:
    for text in (
        "999999.12345678",
        "999999.999999999",
        "0.000000001",
        "123456.789012345",
        "1000000",
        "0.1",
    ):
        price = Price(input=Decimal(text))
        stored = json.loads(json.dumps(price.view()))
        assert parse_price(stored) == price


def test_prices_in_the_config_file_and_replica_options() -> None:
    local = ModelSpec(name="m", kind="echo", price={"input": "0.5", "output": 1.5})
    assert local.price is not None and local.price.view() == {
        "input": 0.5,
        "output": 1.5,
        "cached_input": None,
        "image": 0.0,
        "step": 0.0,
    }
    remote = RemoteModelSpec(
        name="r",
        price={"input": 1},
        replicas=[ReplicaSpec(url="http://127.0.0.1:1", options={"price": {"output": "2"}})],
    )
    assert remote.price == Price(input=Decimal(1))
    # kept as JSON numbers in the replica's options
    assert remote.replicas[0].options["price"] == {
        "input": 0.0,
        "output": 2.0,
        "cached_input": None,
        "image": 0.0,
        "step": 0.0,
    }
    assert check_price({"health_url": "x"}) == {"health_url": "x"}
    with pytest.raises(ValueError):
        ModelSpec(name="m", kind="echo", price={"input": -2})


def test_the_worst_case_cost_takes_the_dearest_replica() -> None:
    book = PriceBook()
    book.replace({"m": Price(input=Decimal(1), output=Decimal(4))},
                 {"r2": Price(input=Decimal(3), output=Decimal(2)),
                  "other": Price(input=Decimal(100), output=Decimal(100))},
                 {"r1": "m", "r2": "m", "other": "n"})
    # 1000 prompt tokens and 500 completion: the model's 0.003, the override's 0.004
    assert book.worst_cost("m", 1000, 500) == Decimal("0.004")
    # no split known: every token at the higher price of each (4 and 3 per million)
    assert book.worst_cost("m", None, 1500) == Decimal("0.006")
    assert book.worst_cost("unpriced", 10, 10) == 0


def test_the_worst_case_of_pictures_takes_the_dearest_replica() -> None:
    book = PriceBook()
    book.replace({"sd": Price(image=Decimal("0.25"))},
                 {"r2": Price(image=Decimal("0.5")), "other": Price(image=Decimal(9))},
                 {"r1": "sd", "r2": "sd", "other": "flux"})
    assert book.worst_image_cost("sd", 3) == Decimal("1.5")  # the override of r2
    assert book.worst_image_cost("unpriced", 3) == 0
    book.replace({"sd": Price(image=Decimal("0.25"))}, {}, {"r1": "sd"})
    assert book.worst_image_cost("sd", 2) == Decimal("0.5")


def test_the_worst_case_of_pictures_counts_their_steps_at_the_dearest_step_price() -> None:
    book = PriceBook()
    book.replace({"sd": Price(image=Decimal("0.25"), step=Decimal("0.01"))},
                 {"r2": Price(image=Decimal("0.5")), "r3": Price(step=Decimal("0.02")),
                  "other": Price(step=Decimal(9))},
                 {"r1": "sd", "r2": "sd", "r3": "sd", "other": "flux"})
    # each picture at the highest image price (r2's 0.5) plus its steps at the highest step
    # price (r3's 0.02): 3 x (0.5 + 40 x 0.02)
    assert book.worst_image_cost("sd", 3, 40) == Decimal("3.9")
    assert book.worst_image_cost("sd", 3, 10) == Decimal("2.1")  # fewer steps: cheaper
    assert book.worst_image_cost("sd", 3) == Decimal("1.5")  # no steps: the pictures alone
    assert book.worst_image_cost("unpriced", 3, 40) == 0
    assert book.worst_image_cost("sd", 0, 40) == 0
