-- Records idempotency key $2 of app $1 for a request hashed $3 whose event id is $4 (or,
-- when the key's row has expired, $6: a new event id, since the old one may still be in
-- inboxes); returns the request hash and event id the key stands for now: this request's,
-- or those of the request that used the key first (within $5, the retention).
-- Also forgets up to 10 other expired keys of the app, so the table stays bounded without
-- a sweep of its own. No row comes back only when a concurrent request with the same key
-- committed after this statement's snapshot: run it again.
WITH purged AS (
    DELETE FROM request_key
    WHERE ctid IN (
        SELECT ctid FROM request_key
        WHERE app = $1::text AND key <> $2::text AND created_at < now() - $5::interval
        ORDER BY created_at
        LIMIT 10
        FOR UPDATE SKIP LOCKED
    )
),
written AS (
    INSERT INTO request_key (app, key, request_hash, event_id)
    VALUES ($1::text, $2::text, $3::text, $4::text)
    ON CONFLICT (app, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, event_id = $6::text, created_at = now()
        WHERE request_key.created_at < now() - $5::interval
    RETURNING request_hash, event_id
)
SELECT request_hash, event_id FROM written
UNION ALL
SELECT request_hash, event_id FROM request_key
WHERE app = $1::text AND key = $2::text AND NOT EXISTS (SELECT 1 FROM written)
