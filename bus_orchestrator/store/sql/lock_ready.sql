-- The lock keys of up to $2 sagas that wait for a key in $1 (NULL: any key) and could
-- take all their keys now: no key of theirs is held, and nobody waits for one of them
-- ahead of them. Read without locks: grant_locks.sql checks again under the keys' locks.
-- Only the first waiter of a key can be granted: one row per key, by saga_lock_queue_idx.
WITH waiting AS (
    SELECT DISTINCT ON (w.lock_key) w.saga_id
    FROM saga_lock w
    WHERE w.granted_at IS NULL
      AND ($1::text[] IS NULL OR w.lock_key = ANY($1::text[]))
    ORDER BY w.lock_key, w.seq
),
ready AS (
    SELECT DISTINCT c.saga_id
    FROM waiting c
    WHERE NOT EXISTS (
        SELECT 1
        FROM saga_lock mine
        JOIN saga_lock other
          ON other.lock_key = mine.lock_key
         AND other.saga_id <> mine.saga_id
         AND (other.granted_at IS NOT NULL OR other.seq < mine.seq)
        WHERE mine.saga_id = c.saga_id
    )
    LIMIT $2
)
SELECT DISTINCT l.lock_key
FROM saga_lock l
JOIN ready ON ready.saga_id = l.saga_id
