-- Sagas, optionally of status $1 and of type $2, newest first, at most $3.
SELECT state FROM saga
WHERE ($1::text IS NULL OR status = $1::text)
  AND ($2::text IS NULL OR saga_type = $2::text)
ORDER BY created_at DESC, saga_id
LIMIT $3
