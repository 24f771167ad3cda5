"""The AsyncAPI 3.0 document of the bus: every message type, who sends it, who receives it.

One channel per message type (its address is the routing key, its AMQP binding names the
exchange), one operation per participant and message it sends or receives, and per message
the binary-mode CloudEvents headers and the payload schema (pydantic's validation schema,
so it describes what the engine accepts). The document is a plain ``dict`` built in a fixed
order from sorted inputs, so serialising it gives the same bytes every time.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

from bus_orchestrator.core.messages import Contract, ContractRegistry, MessageKind
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.schema.participants import COORDINATOR, Participant
from bus_orchestrator.transport.topology import LIFECYCLE_MAX_LENGTH, Topology

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
CONTENT_TYPE = "application/json"
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
SCHEMA_REF = "#/components/schemas/{model}"
PERSISTENT = 2

WIRE_RULES = """\
## Envelope

Every message is a [CloudEvents 1.0](https://cloudevents.io) event over AMQP 0-9-1, in
either content mode of the CloudEvents RabbitMQ binding:

| mode | AMQP `content_type` | attributes | body |
|---|---|---|---|
| binary (what the engine sends) | `application/json` | headers `ce-id`, `ce-type`, \
`ce-source`, `ce-specversion`, `ce-time`, ... | `data` as JSON |
| structured | `application/cloudevents+json` | in the JSON body | the whole event as JSON, \
`data` inside |

Both modes are accepted on input. The `headers` of each message below describe binary mode;
its `payload` is the event's `data` in either mode.

- `id`, `type`, `source` and `specversion` (`1.0`) are required; a message without them is
  refused, never filled in. `type` is the message type, and the routing key.
- `correlationid` (extension): the saga's correlation key (e.g. an order id).
- `causationid` (extension): the `id` of the message that caused this one. **Required on
  every reply** (it names the command answered), in both content modes: a reply without it
  is dead-lettered as `missing-attributes`.
- `compensates` (extension): on a compensating command, the `id` of the command it undoes.
- The attributes the engine reads (the four above, `correlationid`, `causationid`,
  `compensates`) are strings in both modes (in binary mode every `ce-` header is an AMQP
  string, never a number, boolean, table or byte array), and no attribute holds a control
  character (U+0000-U+001F, U+007F-U+009F), as CloudEvents requires; otherwise the message
  is refused as `not-a-cloudevent`.
- AMQP properties mirror the attributes: `message_id` = `id`, `correlation_id` =
  `correlationid`, `type` = `type`. Messages are persistent (delivery mode 2).
- Optional headers: W3C `traceparent` / `tracestate` (continue the trace to make your work
  part of the saga's trace) and, on commands the engine sends, `x-saga-id`, `x-saga-type`,
  `x-saga-step`, `x-saga-status` and `x-saga-compensation` (informational; replies may echo
  them).
- Payloads are strict: unknown fields are refused, and no string or key may hold a NUL
  character (U+0000) or a lone surrogate (`schema-violation`).
- Money is a decimal string, never a JSON number: an integer part without leading zeros,
  then optionally a point and at most the declared places (`"39.80"`, `"7"`, `"0.5"`), no sign,
  exponent, underscore or space, exactly as the schema's `pattern` says (ECMA-262: `$` is
  the end of the string). The engine sends it in plain notation with exactly the declared
  places (`"7.00"`, `"0.50"`).

## Exchanges and queues

Durable topic exchanges `bus.events` (business events), `bus.commands` (commands to
adapters) and `bus.replies` (adapter replies), routing key = message type. Whatever nobody is
bound to receive goes to their alternate exchange, the fanout `bus.unroutable` (queue
`bus.unroutable`): an unknown routing key, or a new version no one binds yet, is parked there,
never dropped. Every exchange and queue name may carry a deployment prefix
(`BUS_EXCHANGE_PREFIX`, e.g. `staging.bus.events`); the names in this document are unprefixed.

The exchanges, `bus.dead`, `bus.unroutable` and `bus.lifecycle` (see "Saga end events"
below) are shared by every application on the broker. The work queues are each
application's own, named after it: this one's (`{app}`) coordinators consume
`bus.{app}.coordinator`, and each of its adapters `bus.{app}.adapter.<adapter>`, each bound
only to the types it receives. Another
application on the same broker has queues of its own and never receives this one's
traffic; a command type should be handled by one application's adapter only (two adapters
bound to it would each carry it out).

The engine declares them at start-up with exactly the arguments below; a client declaring
one of them must use the same (RabbitMQ refuses a declaration whose arguments differ, and
the engine then stops with one line naming the exchange or queue and the argument). The same
list is in `x-topology`, and each channel's AMQP binding gives its exchange's arguments in
`x-exchange-arguments`.

{topology}

## Saga end events

Every saga publishes one event when it reaches a final status:
`saga.<saga>.completed.v1`, `saga.<saga>.compensated.v1` or `saga.<saga>.failed.v1`, on
`bus.events` with the type as routing key, `correlationid` = the saga's correlation key, and
an `id` derived from the saga's (a retried message ends the saga once on the bus). Its data:
`saga_id`, `saga_type`, `correlation_id`, `status`, `reason` (why it did not complete) and
`started_by` (`message_id` and `correlation_id` of the event that started it). A parent saga
learns from it how its child saga ended; any system may react to it by binding a queue of its
own to the types it wants.

Nobody need bind them: the shared queue `bus.lifecycle` is bound to `saga.*.completed.v1`,
`saga.*.compensated.v1` and `saga.*.failed.v1`, so an end event is never unroutable. It is a
bounded feed, not a work queue: it keeps at most the newest {lifecycle_length} end events for
at most 7 days (`x-max-length`, `x-overflow: drop-head`, `x-message-ttl`), dropping the
oldest first and dead-lettering none. Read it to look at recent ends; a consumer that must not
miss one binds a queue of its own.

## Cancelling a saga

Publish `saga.<saga>.cancel_requested.v1` to `bus.events` (routing key = the type) with the
data `correlation_id` (the saga's correlation key) and `reason`. A running saga then sends no
more forward commands, awaits the commands still in flight, compensates what it did (newest
first) and ends `compensated` (`failed`, should a compensation fail); a finished saga
ignores the request. A request for a saga that
has not started yet waits for it as any early event does (see "Order and duplicates").
`bus.lifecycle` is not bound to cancel requests: one for a saga type no coordinator runs
goes to `bus.unroutable`.

## Replying to a command

Do the work once per command `id` (a command can be delivered twice, and is resent with the
same `id` when its reply is late), then publish one reply to `bus.replies` with routing key
= reply type, `correlationid` = the command's `correlationid`, `causationid` = the command's
`id`, and a reply `id` derived from the command `id`, so a re-sent reply is recognised as
the same message.

A compensating command can overtake the command it undoes (that command's reply was late).
Keep, per command `id`, a claim taken before calling the external system, and lay a
tombstone on the `id` a compensating command names before running it, both under one
unique key: a command that finds a tombstone is never carried out, and is answered with its
failure reply; a compensation that finds a claim not yet settled waits for it.

## Order and duplicates

A message is known by its `source` and `id` together: the same pair again changes nothing,
the same `id` from another `source` is another message. The messages of one saga (one
`correlationid`) are applied in the order the coordinator received them. An event for a
saga that has not started yet (a cancellation that overtook its order) is kept and applied
when that saga starts; if it does not start within the coordinator's time to live
(`BUS_PARK_TTL_SECONDS`), the event is dead-lettered with the reason `expired`.

## Bad input and dead letters

Malformed JSON (including JSON nested too deeply to parse), a body that is not a
CloudEvent, missing required attributes, an unknown type, data that fails the contract or an
oversized body is published to the fanout exchange
`bus.dead` (queue `bus.dead`) with the original body and headers plus `x-dead-reason`
(`malformed`, `not-a-cloudevent`, `missing-attributes`, `unknown-type`, `schema-violation`,
`oversized`, `handler-error`, `delivery-limit`, `expired`), `x-dead-detail`,
`x-original-exchange` and `x-original-routing-key`, then acknowledged. All headers of a
message travel in one AMQP frame (RabbitMQ's `frame_max`, 131072 bytes by default): original
headers that would not fit next to the reason are dropped from the dead letter, their number in
`x-dead-headers-dropped`.

A message whose deliveries keep ending unsettled (requeued, or its consumer died) is
dead-lettered by the consumer on the last delivery its queue allows (`x-delivery-count` =
`x-delivery-limit`) with the reason `delivery-limit`. Should even that fail, RabbitMQ moves it
to `bus.dead` itself, without `x-dead-reason` but with `x-first-death-reason: delivery_limit`
and `x-death`.
"""


def _arguments(arguments: dict[str, str | int]) -> str:
    return ", ".join(f"`{k}`: `{v}`" for k, v in arguments.items()) or "none"


def _work_queues(
    topology: Topology, app_id: str, participants: Sequence[Participant]
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The app's work queues: name, what it carries, and its ``(exchange, routing key)``
    bindings (the types its coordinator or adapter receives)."""
    queues = []
    for participant in participants:
        bindings = [(topology.exchange_for(m.kind), m.message_type) for m in participant.receives]
        if participant.name == COORDINATOR:
            queues.append(
                (
                    topology.coordinator_queue(app_id),
                    "the coordinator's events and replies",
                    bindings,
                )
            )
        else:
            queues.append(
                (
                    topology.adapter_queue(app_id, participant.name),
                    f"the commands of adapter {participant.name}",
                    bindings,
                )
            )
    return queues


def topology_table(topology: Topology, app_id: str, participants: Sequence[Participant]) -> str:
    """The exchanges and queues the engine declares, as a markdown table."""
    rows = [
        "| name | kind | arguments | carries |",
        "|---|---|---|---|",
    ]
    for exchange in topology.exchanges():
        rows.append(
            f"| `{exchange.name}` | {exchange.type} exchange, durable | "
            f"{_arguments(exchange.arguments)} | {exchange.purpose} |"
        )
    for queue in topology.shared_queues():
        carries = queue.purpose
        routing_keys = [f"`{key}`" for _, key in queue.bindings if key]
        if routing_keys:
            carries += f", bound to {', '.join(routing_keys)} on `{queue.bindings[0][0]}`"
        rows.append(
            f"| `{queue.name}` | queue, durable | {_arguments(queue.arguments)} | {carries} |"
        )
    work = _arguments(topology.work_queue_arguments())
    for name, what, bindings in _work_queues(topology, app_id, participants):
        keys = ", ".join(f"`{key}`" for _, key in bindings) or "nothing"
        rows.append(f"| `{name}` | queue, durable | {work} | {what}, bound to {keys} |")
    limit = "`x-delivery-limit` is `BUS_DELIVERY_LIMIT` (default 20)."
    return "\n".join(rows) + "\n\n" + limit


def topology_extension(
    topology: Topology, app_id: str, participants: Sequence[Participant]
) -> dict[str, Any]:
    """``x-topology``: every exchange and queue the engine declares for the app, with its
    arguments and bindings (the shared exchanges and queues, and the app's own work
    queues)."""
    work = topology.work_queue_arguments()
    return {
        "exchanges": [
            {
                "name": e.name,
                "type": e.type,
                "durable": True,
                "autoDelete": False,
                "arguments": dict(e.arguments),
            }
            for e in topology.exchanges()
        ],
        "queues": [
            *(
                {
                    "name": q.name,
                    "durable": True,
                    "arguments": dict(q.arguments),
                    "bindings": [{"exchange": ex, "routingKey": rk} for ex, rk in q.bindings],
                }
                for q in topology.shared_queues()
            ),
            *(
                {
                    "name": name,
                    "durable": True,
                    "arguments": dict(work),
                    "bindings": [{"exchange": ex, "routingKey": rk} for ex, rk in bindings],
                }
                for name, _, bindings in _work_queues(topology, app_id, participants)
            ),
        ],
    }


def channel_id(message_type: str) -> str:
    """``orders.order_placed.v1`` -> ``ordersOrderPlacedV1``."""
    first, *rest = [part for part in re.split(r"[^A-Za-z0-9]+", message_type) if part]
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _docstring(contract: Contract) -> tuple[str | None, str | None]:
    # Read the class's own docstring: an undocumented model must not show its base's.
    doc = contract.model.__dict__.get("__doc__")
    if not doc:
        return None, None
    first, _, rest = inspect.cleandoc(doc).partition("\n")
    return first.strip(), rest.strip() or None


_PLURAL = {
    MessageKind.EVENT: "Events",
    MessageKind.COMMAND: "Commands",
    MessageKind.REPLY: "Replies",
}


def _article(kind: MessageKind) -> str:
    return "An" if kind is MessageKind.EVENT else "A"


def _headers(contract: Contract) -> dict[str, Any]:
    message_type = contract.message_type
    properties: dict[str, Any] = {
        "ce-id": {
            "type": "string",
            "minLength": 1,
            "description": "CloudEvents `id`; also the AMQP `message_id`.",
        },
        "ce-type": {
            "type": "string",
            "const": message_type,
            "description": "CloudEvents `type`; also the AMQP `type` and the routing key.",
        },
        "ce-source": {
            "type": "string",
            "minLength": 1,
            "format": "uri-reference",
            "description": "CloudEvents `source`: who produced the message.",
        },
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-time": {"type": "string", "format": "date-time"},
        "ce-correlationid": {
            "type": "string",
            "description": "The saga's correlation key; also the AMQP `correlation_id`.",
        },
        "ce-causationid": {
            "type": "string",
            "description": "The `id` of the message that caused this one.",
        },
        "traceparent": {
            "type": "string",
            "pattern": TRACEPARENT_PATTERN,
            "description": "W3C trace context.",
        },
        "tracestate": {"type": "string", "description": "W3C trace context, vendor part."},
    }
    if contract.kind is MessageKind.COMMAND:
        properties["ce-compensates"] = {
            "type": "string",
            "description": (
                "On a compensating command: the `id` of the command it undoes. An adapter "
                "that has not seen that command must refuse it should it arrive later."
            ),
        }
    if contract.kind is not MessageKind.EVENT:
        echo = "set by the coordinator" if contract.kind is MessageKind.COMMAND else "echoed"
        for header, what in (
            ("x-saga-id", "saga id"),
            ("x-saga-type", "saga type"),
            ("x-saga-step", "step"),
            ("x-saga-status", "saga status"),
        ):
            properties[header] = {"type": "string", "description": f"The {what} ({echo})."}
        properties["x-saga-compensation"] = {
            "type": "string",
            "enum": ["true"],
            "description": f"Present on compensating commands ({echo}).",
        }
    required = ["ce-id", "ce-type", "ce-source", "ce-specversion"]
    if contract.kind is MessageKind.REPLY:
        # How the engine finds the saga that awaits a reply: required, and not empty.
        required.append("ce-causationid")
        properties["ce-causationid"] = {
            "type": "string",
            "minLength": 1,
            "description": "The `id` of the command this reply answers (required).",
        }
    return {"type": "object", "required": required, "properties": properties}


def _message(contract: Contract) -> dict[str, Any]:
    summary, details = _docstring(contract)
    where = (
        f"{_article(contract.kind)} {contract.kind}, published to `{contract.exchange}` with "
        f"routing key `{contract.message_type}`."
    )
    message: dict[str, Any] = {"name": contract.message_type, "title": contract.model.__name__}
    if summary:
        message["summary"] = summary
    message["description"] = f"{where}\n\n{details}" if details else where
    message["contentType"] = CONTENT_TYPE
    message["tags"] = [{"name": str(contract.kind)}]
    message["correlationId"] = {
        "description": "The saga's correlation key.",
        "location": "$message.header#/ce-correlationid",
    }
    message["headers"] = _headers(contract)
    message["payload"] = {"$ref": SCHEMA_REF.format(model=contract.model.__name__)}
    message["bindings"] = {
        "amqp": {"messageType": contract.message_type, "bindingVersion": AMQP_BINDING_VERSION}
    }
    return message


def _channel(contract: Contract, cid: str, topology: Topology) -> dict[str, Any]:
    arguments = {e.name: e.arguments for e in topology.exchanges()}[contract.exchange]
    return {
        "address": contract.message_type,
        "title": contract.message_type,
        "description": (
            f"{_PLURAL[contract.kind]} of type `{contract.message_type}` on the topic "
            f"exchange `{contract.exchange}`, routing key = the type."
        ),
        "messages": {cid: {"$ref": f"#/components/messages/{cid}"}},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": contract.exchange,
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "x-exchange-arguments": dict(arguments),
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _operation(participant: Participant, action: str, contract: Contract, cid: str) -> Any:
    verb = "sends" if action == "send" else "receives"
    binding: dict[str, Any] = (
        {"deliveryMode": PERSISTENT, "mandatory": False} if action == "send" else {"ack": True}
    )
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{cid}"},
        "summary": f"{participant.name} {verb} {contract.message_type}",
        "tags": [{"name": participant.name}],
        "messages": [{"$ref": f"#/channels/{cid}/messages/{cid}"}],
        "bindings": {"amqp": {**binding, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _add_schema(schemas: dict[str, Any], name: str, schema: dict[str, Any], owner: str) -> None:
    existing = schemas.get(name)
    if existing is not None and existing != schema:
        raise DefinitionError(
            f"two different models are both named {name!r} (the second reached through "
            f"{owner}); rename one, e.g. with a version suffix"
        )
    schemas[name] = schema


def component_schemas(contracts: Sequence[Contract]) -> dict[str, Any]:
    """Every message model's validation schema and the models it uses, by class name."""
    schemas: dict[str, Any] = {}
    models: dict[str, Contract] = {}
    for contract in contracts:
        name = contract.model.__name__
        if name in models:
            raise DefinitionError(
                f"{models[name].message_type} and {contract.message_type} are both modelled by "
                f"a class named {name!r}; rename one, e.g. with a version suffix"
            )
        models[name] = contract
        schema = contract.model.model_json_schema(mode="validation", ref_template=SCHEMA_REF)
        for def_name, definition in schema.pop("$defs", {}).items():
            _add_schema(schemas, def_name, definition, contract.message_type)
        _add_schema(schemas, name, schema, contract.message_type)
    return {name: schemas[name] for name in sorted(schemas)}


def _description(description: str, participants: Sequence[Participant], app_id: str) -> str:
    parts = [description.strip()] if description.strip() else []
    parts.append(
        "## Participants\n\n" + "\n".join(f"- **{p.name}**: {p.description}" for p in participants)
    )
    table = topology_table(Topology(), app_id, participants)
    rules = WIRE_RULES.strip().replace("{topology}", table).replace("{app}", app_id)
    parts.append(rules.replace("{lifecycle_length}", str(LIFECYCLE_MAX_LENGTH)))
    return "\n\n".join(parts) + "\n"


def asyncapi_document(
    registry: ContractRegistry,
    participants: Iterable[Participant],
    *,
    title: str,
    version: str,
    app_id: str,
    description: str = "",
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``registry`` as sent and received by ``participants``.

    ``description`` (markdown) comes first in ``info.description``, before the participants
    and the wire rules. Raises ``DefinitionError`` when a participant's message is not the
    registry's model for its type, or two different models share a class name.
    """
    contracts: list[Contract] = list(registry)
    topology = Topology()  # unprefixed names, default delivery limit
    ids: dict[str, str] = {}
    for contract in contracts:
        cid = channel_id(contract.message_type)
        if cid in ids.values():
            raise DefinitionError(f"{contract.message_type!r} gives channel id {cid!r} twice")
        ids[contract.message_type] = cid
    parties = list(participants)

    operations: dict[str, Any] = {}
    for participant in parties:
        for action, models in (("receive", participant.receives), ("send", participant.sends)):
            for model in sorted(models, key=lambda m: m.message_type):
                known = registry.get(model.message_type)
                if known is None or known.model is not model:
                    raise DefinitionError(
                        f"{participant.name} {action}s {model.__name__} "
                        f"({model.message_type!r}), which is not in the contract registry"
                    )
                cid = ids[known.message_type]
                operation_id = f"{participant.name}.{action}.{cid}"
                operations[operation_id] = _operation(participant, action, known, cid)

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:{app_id}",
        "info": {
            "title": title,
            "version": version,
            "description": _description(description, parties, app_id),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": (
                    "The local RabbitMQ, vhost `/`. Exchange and queue names may carry a "
                    "deployment prefix (`BUS_EXCHANGE_PREFIX`), e.g. `staging.bus.events`."
                ),
            }
        },
        "channels": {
            ids[c.message_type]: _channel(c, ids[c.message_type], topology) for c in contracts
        },
        "operations": operations,
        "components": {
            "messages": {ids[c.message_type]: _message(c) for c in contracts},
            "schemas": component_schemas(contracts),
        },
        "x-topology": topology_extension(topology, app_id, parties),
    }
