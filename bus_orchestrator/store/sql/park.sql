-- park: keeps an event that arrived before its saga, records it in the inbox of $1 (so a
-- redelivery is not parked twice) and in the history of the saga it will belong to ($4).
-- A duplicate raises unique_violation on saga_inbox_pkey and nothing is written.
-- $1 consumer, $2 source, $3 message id, $4 saga id (derived), $5 at, $6 message type,
-- $7 correlation id, $8 causation id, $9 outcome, $10 note, $11 payload (JSON text),
-- $12 saga type, $13 exchange, $14 routing key, $15 content type, $16 headers (JSON text),
-- $17 body, $18 expires at, $19 the app (NULL from a store of no app).
WITH inbox_row AS (
    INSERT INTO saga_inbox (consumer, source, message_id, app)
    VALUES ($1::text, $2::text, $3::text, $19::text)
    RETURNING 1
),
history_row AS (
    INSERT INTO saga_history (saga_id, at, direction, message_id, message_type,
                              correlation_id, causation_id, outcome, note, payload, app)
    SELECT $4::uuid, $5::timestamptz, 'in', $3::text, $6::text, $7::text, $8::text,
           $9::text, $10::text, $11::text::jsonb, $19::text
    FROM inbox_row
)
INSERT INTO parked_event (saga_type, correlation_id, message_id, source, message_type,
                          exchange, routing_key, content_type, headers, body, expires_at)
SELECT $12::text, $7::text, $3::text, $2::text, $6::text, $13::text, $14::text, $15::text,
       $16::text::jsonb, $17::bytea, $18::timestamptz
FROM inbox_row
