-- Records the broker's confirm for the rows with ids in $1.
UPDATE outbox SET sent_at = now()
WHERE id = ANY($1::bigint[]) AND sent_at IS NULL
