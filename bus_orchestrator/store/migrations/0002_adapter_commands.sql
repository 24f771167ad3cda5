-- Commands processed by each adapter, with the exact reply sent for each, so a redelivered
-- or resent command is answered again (same reply id, same bytes) without a second call to
-- the external system. Tables are unqualified: migrate() sets search_path to the schema.

CREATE TABLE adapter_command (
    adapter        text        NOT NULL,
    command_id     text        NOT NULL,
    command_type   text        NOT NULL,
    correlation_id text,
    reply_id       text        NOT NULL,
    reply_type     text        NOT NULL,
    -- exchange, routing_key, headers, content_type, message_id, message_type,
    -- correlation_id, body and body_encoding ('utf-8' or 'base64'): see
    -- bus_orchestrator.adapters.command_log.reply_document.
    reply          jsonb       NOT NULL,
    seq            bigserial   NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT adapter_command_pkey PRIMARY KEY (adapter, command_id)
);

