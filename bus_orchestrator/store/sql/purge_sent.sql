-- Deletes up to 5000 rows confirmed more than $1 ago (oldest first); returns how many.
-- Bounded, so a purge after a long pause never becomes one huge transaction.
WITH gone AS (
    DELETE FROM outbox
    WHERE id IN (
        SELECT id FROM outbox
        WHERE sent_at < now() - $1::interval
        ORDER BY id
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
