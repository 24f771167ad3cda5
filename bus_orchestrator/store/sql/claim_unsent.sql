-- Claims up to $2 unsent rows whose lease has run out, for another lease of $1. Rows another
-- relay is claiming right now are skipped rather than waited for. Only rows of app $3 (or
-- of no app, written before migration 0007; NULL: of any app).
WITH due AS (
    SELECT id FROM outbox
    WHERE sent_at IS NULL AND claimed_until < now()
      AND ($3::text IS NULL OR app = $3::text OR app IS NULL)
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox SET claimed_until = now() + $1::interval
FROM due
WHERE outbox.id = due.id
RETURNING outbox.id, outbox.message_id, outbox.message_type, outbox.exchange,
          outbox.routing_key, outbox.content_type, outbox.correlation_id, outbox.headers,
          outbox.body
