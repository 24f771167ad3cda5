-- The lock rows of saga $1: each key it holds (granted_at) or waits for, with its place in
-- the key's queue (1: next) and the key's holder, if any.
SELECT l.lock_key, l.enqueued_at, l.granted_at,
       (SELECT count(*) FROM saga_lock o
        WHERE o.lock_key = l.lock_key AND o.granted_at IS NULL AND o.seq < l.seq) + 1 AS place,
       (SELECT h.saga_id::text FROM saga_lock h
        WHERE h.lock_key = l.lock_key AND h.granted_at IS NOT NULL) AS holder
FROM saga_lock l
WHERE l.saga_id = $1::uuid
ORDER BY l.lock_key
