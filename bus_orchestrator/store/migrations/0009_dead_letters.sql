-- The dead-letter archive: each message of bus.dead as it was, moved here by the API
-- process (runtime/dead_archive.py), so dead letters are listed without consuming
-- anything from the bus, and replayed or purged with who did it and why.
-- The fingerprint is a hash of what the broker delivered (properties, headers less the
-- x-delivery-count a redelivery adds, and body): a redelivered dead letter finds its row
-- and writes nothing. The id is derived from it.
CREATE TABLE dead_letter (
    id                   uuid        PRIMARY KEY,
    fingerprint          bytea       NOT NULL,
    message_id           text,
    message_type         text,
    source               text,
    correlation_id       text,
    reason               text        NOT NULL,
    detail               text        NOT NULL,
    dead_lettered_by     text,
    original_exchange    text,
    original_routing_key text,
    saga_id              uuid,
    content_type         text,
    -- AMQP properties but the headers; headers and properties as JSON, values JSON
    -- cannot hold (bytes, timestamps, decimals) tagged (transport/dead_letters.py).
    properties           jsonb       NOT NULL,
    headers              jsonb       NOT NULL,
    -- NULL once purged; body_bytes keeps its size.
    body                 bytea,
    body_bytes           integer     NOT NULL,
    dead_lettered_at     timestamptz NOT NULL,
    archived_at          timestamptz NOT NULL DEFAULT now(),
    status               text        NOT NULL DEFAULT 'dead',
    replayed_at          timestamptz,
    replayed_by          text,
    replay_reason        text,
    replayed_as          text,
    purged_at            timestamptz,
    purged_by            text,
    purge_reason         text,
    CONSTRAINT dead_letter_fingerprint_key UNIQUE (fingerprint),
    CONSTRAINT dead_letter_status_check CHECK (status IN ('dead', 'replayed', 'purged'))
);

-- GET /dead: newest first, by default of one status.
CREATE INDEX dead_letter_status_newest_idx ON dead_letter (status, dead_lettered_at DESC, id);
CREATE INDEX dead_letter_newest_idx ON dead_letter (dead_lettered_at DESC, id);
CREATE INDEX dead_letter_saga_idx ON dead_letter (saga_id) WHERE saga_id IS NOT NULL;
