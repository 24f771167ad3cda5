"""What a saga's handlers return becomes its data, whether they build new data or change
the data they were given in place (pydantic models are mutable by default)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from bus_orchestrator.core import Reaction, Step
from bus_orchestrator.core.definition import Wait
from tests.unit.constructs import KEY, Data, DoA, Done, Driver, Paid, saga, step


def _in_place(data: Data, what: object) -> Data:
    data.seen = (*data.seen, "changed")
    return data


def _copied(data: Data, what: object) -> Data:
    return data.model_copy(update={"seen": (*data.seen, "changed")})


def _on_reply(handler: Callable[[Data, object], Data]) -> Driver:
    a = Step(name="a", command=lambda d: DoA(key=d.key), sends=DoA, succeeds_on=(Done,))
    object.__setattr__(a, "on_reply", handler)
    driver = Driver(saga("handled", [a, step("b")]))
    driver.start()
    driver.reply("a", Done())
    return driver


def _on_event(handler: Callable[[Data, object], Data]) -> Driver:
    paid = Wait(
        name="paid",
        event=Paid,
        correlate=lambda e: e.key,
        timeout=timedelta(minutes=1),
        on_event=handler,
    )
    driver = Driver(saga("handled", [paid, step("b")]))
    driver.start()
    driver.event(Paid(key=KEY))
    return driver


def _reaction(handler: Callable[[Data, object], Data]) -> Driver:
    definition = saga("handled", [step("a")])
    object.__setattr__(
        definition,
        "reactions",
        (Reaction(Paid, correlate=lambda e: e.key, react=handler),),
    )
    driver = Driver(definition)
    driver.start()
    driver.event(Paid(key=KEY))
    return driver


@pytest.mark.parametrize("run", [_on_reply, _on_event, _reaction])
@pytest.mark.parametrize("handler", [_in_place, _copied])
def test_what_a_handler_returns_is_the_saga_data(
    run: Callable[[Callable[[Data, object], Data]], Driver],
    handler: Callable[[Data, object], Data],
) -> None:
    driver = run(handler)
    assert driver.saga.data["seen"] == ["changed"]
