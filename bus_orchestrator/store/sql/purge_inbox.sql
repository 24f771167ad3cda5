-- Forgets up to 5000 message ids received more than $1 ago by app $2 (or before
-- migration 0007, by no app; NULL: by any app); returns how many.
-- A duplicate arriving later still changes nothing: decide() sees the saga has moved on.
WITH gone AS (
    DELETE FROM saga_inbox
    WHERE ctid IN (
        SELECT ctid FROM saga_inbox
        WHERE received_at < now() - $1::interval
          AND ($2::text IS NULL OR app = $2::text OR app IS NULL)
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
