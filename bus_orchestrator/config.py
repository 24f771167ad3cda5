"""All configuration, from environment variables prefixed ``BUS_``.

``Settings`` is built once, in the composition root (``cli``), and passed down.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUS_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://root@127.0.0.1:5432/test"
    database_schema: str = Field(
        default="public",
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Postgres schema for all tables",
    )
    adapters_database_url: str | None = Field(
        default=None,
        description="Database of the adapters' command log; BUS_DATABASE_URL when unset",
    )
    adapters_database_schema: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Postgres schema of the adapters' command log; BUS_DATABASE_SCHEMA when unset",
    )
    exchange_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9_.-]*$", description="Prefix of every exchange and queue"
    )
    source: str = "urn:bus-orchestrator:coordinator"
    prefetch: int = Field(default=64, ge=1)
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    delivery_limit: int = Field(default=20, ge=1)
    step_timeout_seconds: float = Field(default=30.0, gt=0)
    outbox_lease_seconds: float = Field(default=10.0, gt=0)
    outbox_sweep_seconds: float = Field(default=1.0, gt=0)
    outbox_retention_seconds: float = Field(
        default=86_400.0, ge=0, description="How long confirmed outbox rows are kept"
    )
    inbox_retention_seconds: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="How long processed message ids are kept to recognise duplicates",
    )
    park_ttl_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How long an event waits for a saga that has not started yet",
    )
    park_sweep_seconds: float = Field(default=1.0, gt=0)
    lock_sweep_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often lock keys a crash left ungranted (or sagas granted but not "
        "told) are looked for",
    )
    command_log_retention_seconds: float = Field(
        default=30 * 86_400.0,
        gt=0,
        description="How long the adapters keep processed commands, claims and tombstones",
    )
    saga_retention_seconds: float = Field(
        default=30 * 86_400.0,
        gt=0,
        description="How long finished sagas and their history (and history rows of no "
        "saga) are kept",
    )
    housekeeping_seconds: float = Field(default=60.0, gt=0)
    timer_poll_seconds: float = Field(default=0.5, gt=0)
    timer_lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a coordinator owns a due timer it claimed"
    )
    timer_attempts: int = Field(
        default=8, ge=1, description="Tries of a failing timer before its saga is failed"
    )
    timer_retry_seconds: float = Field(
        default=5.0, gt=0, description="Wait after a timer's first failed try; doubles each try"
    )
    timer_retry_max_seconds: float = Field(
        default=600.0, gt=0, description="Longest wait between two tries of a failing timer"
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_command_timeout_seconds: float = Field(default=10.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve Prometheus /metrics here; off when unset"
    )
    metrics_host: str = "0.0.0.0"  # noqa: S104 - a metrics endpoint is meant to be scraped
    jaeger_ui_url: str | None = Field(
        default=None, description="Base URL of the Jaeger UI, for links to a saga's trace"
    )

    api_host: str = Field(default="127.0.0.1", description="Where bus-orchestrator api listens")
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_tokens: SecretStr | None = Field(
        default=None,
        description="Bearer tokens of the HTTP API with their roles: token=role,... "
        "(roles: reader, operator)",
    )
    api_tokens_file: str | None = Field(
        default=None, description="A file of token=role pairs (one a line, or comma-separated)"
    )
    api_insecure: bool = Field(
        default=False, description="Serve the HTTP API without tokens (no access control)"
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, url: str) -> str:
        return _url(url, ("amqp", "amqps"), "amqp://user:password@host:5672/vhost")

    @field_validator("database_url", "adapters_database_url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        return _url(url, ("postgresql", "postgres"), "postgresql://user:password@host:5432/db")

    def for_adapters(self) -> Settings:
        """These settings with the adapters' database (their command log) as the database.

        A team's adapters need not reach the orchestrator's database: they keep their log
        wherever ``BUS_ADAPTERS_DATABASE_URL`` and ``BUS_ADAPTERS_DATABASE_SCHEMA`` say.
        """
        return self.model_copy(
            update={
                "database_url": self.adapters_database_url or self.database_url,
                "database_schema": self.adapters_database_schema or self.database_schema,
            }
        )

    @property
    def adapters_apart(self) -> bool:
        """Whether the adapters keep their command log elsewhere than the orchestrator."""
        log = self.for_adapters()
        return (log.database_url, log.database_schema) != (
            self.database_url,
            self.database_schema,
        )


def _url(url: str, schemes: tuple[str, ...], example: str) -> str:
    """``url`` if its scheme is one of ``schemes`` and its port a number (else a
    ``ValueError`` showing an ``example``): a typo is reported at start, not by a driver."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{exc}; expected a URL like {example}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"expected a URL like {example}")
    return url
