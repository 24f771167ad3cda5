-- Sagas whose deadline is at or before $1, earliest deadline first, at most $2.
SELECT state FROM saga
WHERE deadline <= $1
ORDER BY deadline, saga_id
LIMIT $2
