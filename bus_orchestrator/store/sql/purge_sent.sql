-- Deletes rows confirmed more than $1 ago; returns how many.
WITH gone AS (
    DELETE FROM outbox WHERE sent_at < now() - $1::interval RETURNING 1
)
SELECT count(*) FROM gone
