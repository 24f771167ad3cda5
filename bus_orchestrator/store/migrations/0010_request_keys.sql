-- Idempotency keys of the HTTP API (POST /events/{type} with an Idempotency-Key header):
-- the first request with a key records a hash of what it asked and the id of the event it
-- publishes; a retry with the same key and the same request gets that event id again (and
-- its commit is a duplicate in the inbox), one with a different request is refused. A key
-- is an app's (its API's); it is forgotten once older than the inbox's retention, by the
-- requests that come after (remember_request.sql deletes a few expired rows each time).
CREATE TABLE request_key (
    app          text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    event_id     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT request_key_pkey PRIMARY KEY (app, key)
);

CREATE INDEX request_key_age_idx ON request_key (app, created_at);
