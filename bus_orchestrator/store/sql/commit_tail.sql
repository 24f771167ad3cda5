-- The shared tail of the three commit statements (commit_*.sql + this file): the
-- inbox, history and outbox rows, written only when the head's saga_row returned a row.
-- Parameters:
--   $1 consumer, $2 message id, $3 saga id of the history rows (may be NULL),
--   $4..$12 history columns as arrays: at, direction, message_id, message_type,
--           correlation_id, causation_id, outcome, note, payload (JSON text),
--   $13 outbox lease,
--   $14..$21 outbox columns as arrays: message_id, message_type, exchange, routing_key,
--            content_type, correlation_id, headers (JSON text), body,
--   $22 the message's source (the inbox knows a message by consumer, source and id),
--   $23 the parked event this message was (NULL if none): removed once the rest is written,
--   $24 the app whose coordinator wrote the rows (NULL from a store of no app): the
--       relay and housekeeping of each app take only its own (migration 0007),
--   $25 the trace id of the work that wrote the history rows (NULL untraced; 0013).
-- The inbox insert has no ON CONFLICT on purpose: a message seen before raises
-- unique_violation on saga_inbox_pkey and the whole statement is undone (DUPLICATE).
inbox_row AS (
    INSERT INTO saga_inbox (consumer, source, message_id, app)
    SELECT $1::text, $22::text, $2::text, $24::text FROM saga_row
    RETURNING 1
),
unparked AS (
    DELETE FROM parked_event
    WHERE id = $23::bigint AND EXISTS (SELECT 1 FROM inbox_row)
),
history_rows AS (
    INSERT INTO saga_history (saga_id, at, direction, message_id, message_type,
                              correlation_id, causation_id, outcome, note, payload, app,
                              trace_id)
    SELECT $3::uuid, h.at, h.direction, h.message_id, h.message_type,
           h.correlation_id, h.causation_id, h.outcome, h.note, h.payload::jsonb, $24::text,
           $25::text
    FROM inbox_row,
         unnest($4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[],
                $9::text[], $10::text[], $11::text[], $12::text[])
             WITH ORDINALITY AS h(at, direction, message_id, message_type, correlation_id,
                                  causation_id, outcome, note, payload, ord)
    ORDER BY h.ord
),
outbox_rows AS (
    -- Rows are fed in input order, so their serial ids ascend in input order too.
    INSERT INTO outbox (message_id, message_type, exchange, routing_key, content_type,
                        correlation_id, headers, body, claimed_until, app)
    SELECT o.message_id, o.message_type, o.exchange, o.routing_key, o.content_type,
           o.correlation_id, o.headers::jsonb, o.body, now() + $13::interval, $24::text
    FROM inbox_row,
         unnest($14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                $19::text[], $20::text[], $21::bytea[])
             WITH ORDINALITY AS o(message_id, message_type, exchange, routing_key,
                                  content_type, correlation_id, headers, body, ord)
    ORDER BY o.ord
    RETURNING id
)
SELECT (SELECT count(*) FROM inbox_row) AS written,
       ARRAY(SELECT id FROM outbox_rows ORDER BY id) AS outbox_ids
