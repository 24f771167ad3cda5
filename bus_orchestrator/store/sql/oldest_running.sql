-- The unfinished saga of each type (of the types in $1; NULL: all) that started first.
SELECT DISTINCT ON (saga_type)
       saga_type, saga_id::text AS saga_id, correlation_id, status, created_at
FROM saga
WHERE status NOT IN ('completed', 'compensated', 'failed')
  AND ($1::text[] IS NULL OR saga_type = ANY($1::text[]))
ORDER BY saga_type, created_at, saga_id
