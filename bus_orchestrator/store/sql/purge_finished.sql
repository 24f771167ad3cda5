-- Deletes up to 500 sagas of the types in $2 (NULL: of any type) that finished (completed,
-- compensated or failed) more than $1 ago, oldest first, with their history; returns how many sagas. Bounded, so a purge after
-- a long pause never becomes one huge transaction; rows being written right now are
-- skipped, not waited for.
WITH gone AS (
    SELECT saga_id FROM saga
    WHERE status IN ('completed', 'compensated', 'failed')
      AND updated_at < now() - $1::interval
      AND ($2::text[] IS NULL OR saga_type = ANY($2::text[]))
    ORDER BY updated_at
    LIMIT 500
    FOR UPDATE SKIP LOCKED
),
history_gone AS (
    DELETE FROM saga_history USING gone
    WHERE saga_history.saga_id = gone.saga_id
),
sagas_gone AS (
    DELETE FROM saga USING gone
    WHERE saga.saga_id = gone.saga_id
    RETURNING 1
)
SELECT count(*) FROM sagas_gone
