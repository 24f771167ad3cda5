-- Grants their keys to the sagas that wait for a key in $1 and can take all theirs now
-- (every key free and nobody ahead of them in its queue), all of a saga's keys at once.
-- Run in a transaction that holds the advisory locks of every key in $1 (lock_keys.sql),
-- so no other grant can give one of them meanwhile; a saga with a key outside $1 waits
-- for a later grant. The rows are locked in (saga_id, lock_key) order, the order the
-- release in commit_update_release.sql deletes them in, so the two cannot deadlock.
-- Returns the sagas granted, with what the coordinator needs to tell them.
WITH heads AS (
    SELECT DISTINCT ON (w.lock_key) w.saga_id
    FROM saga_lock w
    WHERE w.granted_at IS NULL AND w.lock_key = ANY($1::text[])
    ORDER BY w.lock_key, w.seq
),
ready AS (
    SELECT DISTINCT w.saga_id
    FROM heads w
    WHERE NOT EXISTS (
          SELECT 1
          FROM saga_lock mine
          JOIN saga_lock other
            ON other.lock_key = mine.lock_key
           AND other.saga_id <> mine.saga_id
           AND (other.granted_at IS NOT NULL OR other.seq < mine.seq)
          WHERE mine.saga_id = w.saga_id
      )
      AND NOT EXISTS (
          SELECT 1 FROM saga_lock k
          WHERE k.saga_id = w.saga_id AND NOT k.lock_key = ANY($1::text[])
      )
),
locked AS (
    SELECT l.saga_id, l.lock_key
    FROM saga_lock l
    JOIN ready ON ready.saga_id = l.saga_id
    ORDER BY l.saga_id, l.lock_key
    FOR UPDATE OF l
),
granted AS (
    UPDATE saga_lock l
    SET granted_at = now()
    FROM locked
    WHERE l.saga_id = locked.saga_id AND l.lock_key = locked.lock_key
    RETURNING l.saga_id
)
SELECT s.saga_id::text AS saga_id, s.saga_type, s.correlation_id
FROM saga s
WHERE s.saga_id IN (SELECT saga_id FROM granted)
ORDER BY s.saga_id
