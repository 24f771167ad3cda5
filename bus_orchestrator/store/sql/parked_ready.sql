-- Parked events that can be acted on: their saga exists by now (it started while they
-- were being parked, or its coordinator stopped before applying them), or they expired
-- at $1; only those for sagas of the types in $3 (NULL: of any type). Oldest first, at
-- most $2. Cheap: the park is empty but for moments.
SELECT p.id, p.saga_type, p.correlation_id, p.message_id, p.source, p.message_type,
       p.exchange, p.routing_key, p.content_type, p.headers, p.body, p.expires_at
FROM parked_event p
WHERE ($3::text[] IS NULL OR p.saga_type = ANY($3::text[]))
  AND (p.expires_at <= $1
       OR EXISTS (SELECT 1 FROM saga s
                  WHERE s.saga_type = p.saga_type AND s.correlation_id = p.correlation_id))
ORDER BY p.id
LIMIT $2
