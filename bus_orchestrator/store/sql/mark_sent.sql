-- Records the broker's confirm for the rows with ids in $1, and drops their body and
-- headers: a confirmed row is never published again, and its body may hold secrets
-- (fields marked Secret). What was sent stays in the saga's history, secrets redacted.
UPDATE outbox SET sent_at = now(), body = NULL, headers = NULL
WHERE id = ANY($1::bigint[]) AND sent_at IS NULL
