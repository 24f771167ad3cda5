"""bus-orchestrator: saga orchestration over RabbitMQ, with saga state in Postgres."""

__version__ = "0.1.0"
