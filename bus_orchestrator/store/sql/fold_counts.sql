-- Housekeeping: folds a batch of up to 10,000 count deltas (migration 0012) into
-- saga_count, so they do not pile up between two GET /stats; returns how many. Runs
-- after count_fold_lock.sql, in its transaction, as saga_counts.sql does.
WITH moved AS (
    DELETE FROM saga_count_delta
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM saga_count_delta LIMIT 10000))
    RETURNING saga_type, status, d
),
summed AS (
    SELECT saga_type, status, sum(d) AS d FROM moved GROUP BY saga_type, status
),
folded AS (
    INSERT INTO saga_count AS c (saga_type, status, n)
    SELECT saga_type, status, d FROM summed
    ON CONFLICT (saga_type, status) DO UPDATE SET n = c.n + EXCLUDED.n
)
SELECT count(*) FROM moved
