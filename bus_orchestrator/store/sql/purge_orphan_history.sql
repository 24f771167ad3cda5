-- Deletes up to 5000 history rows of no saga (messages nobody awaited) recorded more than
-- $1 ago, oldest first; returns how many.
WITH gone AS (
    DELETE FROM saga_history
    WHERE id IN (
        SELECT id FROM saga_history
        WHERE saga_id IS NULL AND at < now() - $1::interval
        ORDER BY at
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
