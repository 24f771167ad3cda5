-- Deletes up to 5000 rows of app $2 (or of no app, written before migration 0007; NULL:
-- of any app) confirmed more than $1 ago (oldest first); returns how many.
-- Bounded, so a purge after a long pause never becomes one huge transaction.
WITH gone AS (
    DELETE FROM outbox
    WHERE id IN (
        SELECT id FROM outbox
        WHERE sent_at < now() - $1::interval
          AND ($2::text IS NULL OR app = $2::text OR app IS NULL)
        ORDER BY id
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
