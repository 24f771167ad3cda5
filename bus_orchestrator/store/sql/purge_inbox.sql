-- Forgets up to 5000 message ids received more than $1 ago; returns how many.
-- A duplicate arriving later still changes nothing: decide() sees the saga has moved on.
WITH gone AS (
    DELETE FROM saga_inbox
    WHERE ctid IN (
        SELECT ctid FROM saga_inbox
        WHERE received_at < now() - $1::interval
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
