-- The unfinished saga of each type (of the types in $1; NULL: all) that started first.
-- $2: the unfinished statuses (every SagaStatus that is not terminal), named rather than
-- "NOT IN (the terminal ones)" so the scan reads only their ranges of
-- saga_status_newest_idx, not every saga.
SELECT DISTINCT ON (saga_type)
       saga_type, saga_id::text AS saga_id, correlation_id, status, created_at
FROM saga
WHERE status = ANY($2::text[])
  AND ($1::text[] IS NULL OR saga_type = ANY($1::text[]))
ORDER BY saga_type, created_at, saga_id
