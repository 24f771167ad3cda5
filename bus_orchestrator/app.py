"""The application object: what a team brings to the engine, under one name.

An ``App`` holds a team's saga definitions, the adapters it runs (if any), the events it
publishes by the clock (``schedules``, see ``core.schedule``) and any extra message models;
its contract registry is derived from what those declare. The command line
finds it by reference, as ``uvicorn`` and ``celery -A`` do::

    # onboarding/app.py
    app = App("onboarding", sagas=[onboarding_saga()], adapters=[crm_adapter()])

    $ bus-orchestrator run --app onboarding.app:app        # or BUS_APP=onboarding.app:app

The reference may name a factory instead, called with the ``Settings`` if it takes a
parameter (``onboarding.app:create_app``). The app's name prefixes its queues, so several
apps share one broker and one database without seeing each other's traffic.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus_orchestrator.adapters.adapter import Adapter
from bus_orchestrator.config import Settings
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.messages import ContractRegistry, Event, Message
from bus_orchestrator.core.schedule import Schedule
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.errors import AppLoadError, DefinitionError
from bus_orchestrator.webhooks import Webhook

APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


@dataclass(frozen=True, slots=True)
class DemoCase:
    """One saga the demo starts: the event that starts it, and the status it must reach."""

    scenario: str
    event: Event
    correlation_id: str
    expected: SagaStatus
    then: tuple[Event, ...] = ()
    """Events other systems publish about the saga (say, an identity provider's verdict
    its ``Wait`` step expects): the demo publishes them after every case's start event. One
    that comes before its saga is ready for it is kept until then."""


DemoPlan = Callable[[int], Sequence[DemoCase]]
"""Given a number of sagas, the cases ``bus-orchestrator demo`` runs for an app."""


@dataclass(frozen=True, eq=False)
class App:
    """A team's application: its name, sagas, adapters and message contracts."""

    name: str
    """Lower-case letters, digits and '-'; it names the app's queues and contract ids."""
    sagas: Sequence[SagaDefinition[Any, Any]] = ()
    adapters: Sequence[Adapter] = ()
    contracts: Sequence[type[Message]] = ()
    """Models beyond those the sagas and adapters declare (say, events others publish)."""
    webhooks: Sequence[Webhook] = ()
    """Other systems' callbacks the HTTP API maps to events (``POST /webhooks/{name}``)."""
    version: str = "0.1.0"
    title: str = ""
    """The title of the app's AsyncAPI document; its name when empty."""
    description: str = ""
    demo: DemoPlan | None = None
    schedules: Sequence[Schedule[Any]] = ()
    """Events the app's coordinators publish by the clock (``core.schedule``)."""
    registry: ContractRegistry = field(init=False)

    def __post_init__(self) -> None:
        if not APP_NAME.match(self.name):
            raise DefinitionError(
                f"app name {self.name!r} must be lower-case letters, digits and '-', "
                "starting with a letter (at most 40)"
            )
        versions = [(s.name, s.version) for s in self.sagas]
        if len(set(versions)) != len(versions):
            raise DefinitionError(
                f"app {self.name!r}: each saga name and version must be unique: {versions}"
            )
        adapters = [a.name for a in self.adapters]
        if len(set(adapters)) != len(adapters):
            raise DefinitionError(f"app {self.name!r}: adapter names must be unique: {adapters}")
        hooks = [w.name for w in self.webhooks]
        if len(set(hooks)) != len(hooks):
            raise DefinitionError(f"app {self.name!r}: webhook names must be unique: {hooks}")
        schedules = [s.name for s in self.schedules]
        if len(set(schedules)) != len(schedules):
            raise DefinitionError(f"app {self.name!r}: schedule names must be unique: {schedules}")
        registry = ContractRegistry()
        models: list[type[Message]] = []
        for saga in self.sagas:
            models += sorted(saga.message_models(), key=lambda m: m.message_type)
        for adapter in self.adapters:
            models += sorted(adapter.message_models(), key=lambda m: m.message_type)
        models += self.contracts
        models += [w.event for w in self.webhooks]
        models += [s.publishes for s in self.schedules]
        for model in models:
            try:
                registry.register(model)
            except ValueError as exc:
                raise DefinitionError(f"app {self.name!r}: {exc}") from exc
        object.__setattr__(self, "registry", registry)

    @property
    def newest_sagas(self) -> list[SagaDefinition[Any, Any]]:
        """The newest version of each saga name, in the order the names first appear."""
        newest: dict[str, SagaDefinition[Any, Any]] = {}
        for saga in self.sagas:
            if saga.name not in newest or saga.version > newest[saga.name].version:
                newest[saga.name] = saga
        return list(newest.values())

    def saga(self, name: str, version: int | None = None) -> SagaDefinition[Any, Any]:
        """The definition of saga ``name`` at ``version`` (the newest when ``None``).

        Raises ``DefinitionError`` with a one-line reason when the app has no such saga."""
        found = [s for s in self.sagas if s.name == name]
        if not found:
            known = ", ".join(sorted({s.name for s in self.sagas})) or "none"
            raise DefinitionError(f"app {self.name!r} has no saga {name!r} (it has: {known})")
        if version is None:
            return max(found, key=lambda s: s.version)
        for saga in found:
            if saga.version == version:
                return saga
        have = ", ".join(str(s.version) for s in sorted(found, key=lambda s: s.version))
        raise DefinitionError(f"saga {name!r} has no version {version} (it has: {have})")

    def definition_for(self, saga_type: str, version: int) -> SagaDefinition[Any, Any] | None:
        """The definition a stored saga runs on: its version, else the newest of its type
        (for a view), else ``None`` (not a saga of this app)."""
        newest = None
        for saga in self.sagas:
            if saga.name != saga_type:
                continue
            if saga.version == version:
                return saga
            if newest is None or saga.version > newest.version:
                newest = saga
        return newest

    @property
    def document_title(self) -> str:
        return self.title or self.name


def load_app(reference: str, settings: Settings | None = None) -> App:
    """The app a ``module:attribute`` reference names (an ``App``, or a factory of one).

    The current directory is importable, as for ``python -m``. Raises ``AppLoadError`` with
    a one-line reason when the reference does not lead to an app.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(
            f"--app takes module:attribute, e.g. onboarding.app:app; got {reference!r}"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise AppLoadError(f"no module {module_name!r} to take the app from") from exc
        raise
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise AppLoadError(f"module {module_name!r} has no {attribute!r}") from exc
    if isinstance(target, App):
        return target
    if callable(target):
        wants_settings = bool(inspect.signature(target).parameters)
        made = target(settings or Settings()) if wants_settings else target()
        if isinstance(made, App):
            return made
        raise AppLoadError(f"{reference} returned {type(made).__name__}, not an App")
    raise AppLoadError(f"{reference} is a {type(target).__name__}, not an App or a factory of one")
