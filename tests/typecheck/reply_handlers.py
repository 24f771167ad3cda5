"""Checked by mypy --strict in ``tests/unit/test_typed_handlers.py``, never run.

A line that must not pass ends in ``# error: <code>``; every other line must pass.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from bus_orchestrator.core import Command, Reply, Step


class Data(BaseModel):
    key: str


class Go(Command):
    message_type: ClassVar[str] = "typecheck.go.v1"


class Went(Reply):
    message_type: ClassVar[str] = "typecheck.went.v1"
    where: str


class Deferred(Reply):
    message_type: ClassVar[str] = "typecheck.deferred.v1"
    until: str


Either = Went | Deferred
BOTH = (Went, Deferred)


def go(d: Data) -> Go:
    return Go()


def on_went(d: Data, r: Went) -> Data:
    return d.model_copy(update={"key": r.where})


def on_deferred(d: Data, r: Deferred) -> Data:
    return d.model_copy(update={"key": r.until})


def on_any(d: Data, r: Reply) -> Data:
    return d


def on_either(d: Data, r: Either) -> Data:
    return d


def next_after_went(d: Data, r: Went) -> str | None:
    return r.where or None


# the handler takes the success type, or a base of it
Step(name="s", command=go, succeeds_on=(Went,), on_reply=on_went)
Step(name="s", command=go, succeeds_on=(Went,), on_reply=on_any)
Step(name="s", command=go, succeeds_on=(Went,), on_reply=on_went, next=next_after_went)
typed: Step[Data, Went] = Step(name="s", command=go, succeeds_on=(Went,))

# a handler of another reply type
Step(name="s", command=go, succeeds_on=(Went,), on_reply=on_deferred)  # error: arg-type
Step(name="s", command=go, succeeds_on=(Deferred,), next=next_after_went)  # error: arg-type
wrong: Step[Data, Deferred] = Step(name="s", command=go, succeeds_on=(Went,))  # error: arg-type

# several success types: the handler must take each of them
Step[Data, Either](name="s", command=go, succeeds_on=BOTH, on_reply=on_either)
Step(name="s", command=go, succeeds_on=BOTH, on_reply=on_any)
Step(name="s", command=go, succeeds_on=BOTH, on_reply=on_went)  # error: arg-type
Step[Data, Either](name="s", command=go, succeeds_on=BOTH, on_reply=on_went)  # error: arg-type
# mypy infers the common base of several types, not their union: it must be spelled out
Step(name="s", command=go, succeeds_on=BOTH, on_reply=on_either)  # error: arg-type
