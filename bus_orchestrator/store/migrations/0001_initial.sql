-- Initial schema. Tables are unqualified: migrate() sets search_path to the target schema.

CREATE TABLE saga (
    saga_id            uuid        PRIMARY KEY,
    saga_type          text        NOT NULL,
    correlation_id     text        NOT NULL,
    status             text        NOT NULL,
    version            integer     NOT NULL,
    -- The whole SagaInstance as JSON; the columns above and below are copies for lookups.
    state              jsonb       NOT NULL,
    pending_command_id text,
    deadline           timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    CONSTRAINT saga_type_correlation_key UNIQUE (saga_type, correlation_id)
);

CREATE INDEX saga_pending_command_idx ON saga (pending_command_id)
    WHERE pending_command_id IS NOT NULL;
CREATE INDEX saga_deadline_idx ON saga (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX saga_newest_idx ON saga (created_at DESC, saga_id);
CREATE INDEX saga_correlation_idx ON saga (correlation_id);

CREATE TABLE saga_inbox (
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT saga_inbox_pkey PRIMARY KEY (consumer, message_id)
);

CREATE TABLE saga_history (
    id             bigserial   PRIMARY KEY,
    saga_id        uuid,
    at             timestamptz NOT NULL,
    direction      text        NOT NULL,
    message_id     text        NOT NULL,
    message_type   text        NOT NULL,
    correlation_id text,
    causation_id   text,
    outcome        text        NOT NULL,
    note           text        NOT NULL,
    payload        jsonb       NOT NULL
);

CREATE INDEX saga_history_saga_idx ON saga_history (saga_id, id);

CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    message_id     text        NOT NULL,
    message_type   text        NOT NULL,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    content_type   text        NOT NULL,
    correlation_id text,
    headers        jsonb       NOT NULL,
    body           bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- The relay that wrote a row publishes it at once; the sweep takes rows whose lease ran out.
    claimed_until  timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);

CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
