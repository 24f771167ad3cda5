-- Fires slot $3 of schedule $2 of app $1, once: the firing row, the schedule's state and
-- the event's outbox row in one statement (atomic on its own). Nothing is written when the
-- slot fired already (the primary key; a second claim of the same slot waits for the first
-- and then does nothing) or a newer slot did (the state: slots only move forward, even
-- once old firings are purged). Returns the outbox row's id, or NULL.
-- Parameters: $4 the next slot, $5 the event id, $6 the time of firing, $7 the outbox
-- lease, $8..$14 the outbox row: message_type, exchange, routing_key, content_type,
-- correlation_id, headers (JSON text), body (its message id is the event id, its app $1).
WITH firing AS (
    INSERT INTO schedule_firing (app, schedule, slot, event_id, event_type, fired_at)
    SELECT $1::text, $2::text, $3::timestamptz, $5::text, $8::text, $6::timestamptz
    WHERE NOT EXISTS (
        SELECT 1 FROM schedule_state
        WHERE app = $1::text AND schedule = $2::text AND last_slot >= $3::timestamptz
    )
    ON CONFLICT (app, schedule, slot) DO NOTHING
    RETURNING slot
),
state AS (
    INSERT INTO schedule_state (app, schedule, registered_at, last_slot, last_fired_at,
                                last_event_id, next_slot)
    SELECT $1::text, $2::text, $6::timestamptz, slot, $6::timestamptz, $5::text,
           $4::timestamptz
    FROM firing
    ON CONFLICT (app, schedule) DO UPDATE
        SET last_slot = EXCLUDED.last_slot, last_fired_at = EXCLUDED.last_fired_at,
            last_event_id = EXCLUDED.last_event_id, next_slot = EXCLUDED.next_slot
        WHERE schedule_state.last_slot IS NULL
           OR schedule_state.last_slot < EXCLUDED.last_slot
),
outbox_row AS (
    INSERT INTO outbox (message_id, message_type, exchange, routing_key, content_type,
                        correlation_id, headers, body, claimed_until, app)
    SELECT $5::text, $8::text, $9::text, $10::text, $11::text, $12::text, $13::jsonb,
           $14::bytea, now() + $7::interval, $1::text
    FROM firing
    RETURNING id
)
SELECT (SELECT id FROM outbox_row) AS outbox_id
