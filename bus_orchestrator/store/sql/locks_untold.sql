-- Up to $1 sagas of the types in $2 (NULL: of any type) that hold their keys but have not
-- been told (their state still waits for locks): the grant's commit came, the message
-- that tells the saga did not (a crash in between). The lock sweep tells them.
SELECT DISTINCT s.saga_id::text AS saga_id, s.saga_type, s.correlation_id
FROM saga_lock l
JOIN saga s ON s.saga_id = l.saga_id
WHERE l.granted_at IS NOT NULL
  AND s.status = 'running'
  AND s.state -> 'waiting_for_locks' = 'true'::jsonb
  AND ($2::text[] IS NULL OR s.saga_type = ANY($2::text[]))
LIMIT $1
