"""Two connections to RabbitMQ per process: one consumes, one publishes.

The broker closes a whole connection when it refuses a publish at the frame level (a
header table over ``frame_max`` is a FRAME_ERROR, not a channel error). On a connection of
its own, such a refusal costs the publishing side a reconnect; the deliveries in hand stay
on the consuming connection and can still be settled.
"""

from __future__ import annotations

from typing import Any

from aio_pika.abc import AbstractRobustConnection

from bus_orchestrator.transport.topology import connect

DEFAULT_FRAME_MAX = 131_072
"""RabbitMQ's default ``frame_max``, if the negotiated one cannot be read."""


class BrokerConnections:
    """The consuming and the publishing connection of one process, and their losses.

    ``losses`` counts the times either connection was lost after it was opened (each one is
    followed by a reconnect of the robust connection), so a test can assert that nothing
    took a connection down.
    """

    def __init__(self, consume: AbstractRobustConnection, publish: AbstractRobustConnection):
        self.consume = consume
        self.publish = publish
        self.losses = {"consume": 0, "publish": 0}
        self._closing = False
        for role, connection in (("consume", consume), ("publish", publish)):
            connection.close_callbacks.add(self._counter(role))

    @classmethod
    async def open(cls, url: str, name: str) -> BrokerConnections:
        """Connect both; ``name`` (e.g. ``coordinator``) shows in RabbitMQ's connection list.

        Raises ``BrokerUnavailableError`` when either cannot be made.
        """
        consume = await connect(url, f"{name} (consume)")
        try:
            publish = await connect(url, f"{name} (publish)")
        except BaseException:
            await consume.close()
            raise
        return cls(consume, publish)

    def frame_max(self) -> int:
        """The largest frame the publishing connection may send, as negotiated."""
        transport = self.publish.transport
        tune = getattr(transport.connection, "connection_tune", None) if transport else None
        return int(getattr(tune, "frame_max", 0) or DEFAULT_FRAME_MAX)

    async def close(self) -> None:
        self._closing = True
        for connection in (self.consume, self.publish):
            if not connection.is_closed:
                await connection.close()

    def _counter(self, role: str) -> Any:
        def lost(_sender: Any, _exc: BaseException | None = None) -> None:
            if not self._closing:
                self.losses[role] += 1

        return lost
