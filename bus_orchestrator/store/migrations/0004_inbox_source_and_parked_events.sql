-- A CloudEvents id is unique only per source: the inbox knows a message by both.
-- Rows recorded before this migration keep an empty source; they are purged with the
-- inbox's retention.
ALTER TABLE saga_inbox ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE saga_inbox DROP CONSTRAINT saga_inbox_pkey;
ALTER TABLE saga_inbox ADD CONSTRAINT saga_inbox_pkey PRIMARY KEY (consumer, source, message_id);

-- Events that arrived before the saga they correlate to (a cancellation overtaking its
-- order), kept as delivered until that saga starts or they expire.
CREATE TABLE parked_event (
    id             bigserial   PRIMARY KEY,
    saga_type      text        NOT NULL,
    correlation_id text        NOT NULL,
    message_id     text        NOT NULL,
    source         text        NOT NULL,
    message_type   text        NOT NULL,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    content_type   text,
    headers        jsonb       NOT NULL,
    body           bytea       NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);

CREATE INDEX parked_event_saga_idx ON parked_event (saga_type, correlation_id, id);
CREATE INDEX parked_event_expiry_idx ON parked_event (expires_at);

-- History rows of parked events whose saga never started ('parked', then 'dead-lettered')
-- name a saga that does not exist: purge_orphan_history.sql finds them by this.
CREATE INDEX saga_history_parked_idx ON saga_history (at)
    WHERE outcome IN ('parked', 'dead-lettered');
