-- How many sagas there are by type and status (of the types in $1; NULL: all), exact.
-- Folds the trigger's deltas (migration 0012) into saga_count and reads the sum, in one
-- statement: its main query sees saga_count as it was when the statement began, so the
-- rows just moved are added from "moved". The store runs it after taking
-- count_fold_lock.sql, so two folds never overlap (one would miss the other's rows).
WITH moved AS (
    DELETE FROM saga_count_delta RETURNING saga_type, status, d
),
summed AS (
    SELECT saga_type, status, sum(d) AS d FROM moved GROUP BY saga_type, status
),
folded AS (
    INSERT INTO saga_count AS c (saga_type, status, n)
    SELECT saga_type, status, d FROM summed
    ON CONFLICT (saga_type, status) DO UPDATE SET n = c.n + EXCLUDED.n
)
SELECT saga_type, status, sum(n)::bigint AS n
FROM (SELECT saga_type, status, n FROM saga_count
      UNION ALL
      SELECT saga_type, status, d FROM summed) AS counts
WHERE ($1::text[] IS NULL OR saga_type = ANY($1::text[]))
GROUP BY saga_type, status
HAVING sum(n) > 0
ORDER BY saga_type, status
