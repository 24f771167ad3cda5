-- Claims up to $3 sagas of the types in $4 (NULL: of any type) whose deadline is at or before $1 (the caller's clock) and that no
-- process holds or is backing off from, earliest deadline first, until $1 + $2 (the lease).
-- Rows a message commit or another process is writing right now are skipped, not waited
-- for. Returns each saga's state and how many tries of this deadline failed before (0 for a
-- deadline never tried: the timer_* columns describe timer_deadline only). In an UPDATE,
-- every SET expression sees the old row, so the CASE compares the old timer_deadline.
WITH due AS (
    SELECT saga_id FROM saga
    WHERE deadline <= $1
      AND ($4::text[] IS NULL OR saga_type = ANY($4::text[]))
      AND (timer_deadline IS DISTINCT FROM deadline OR timer_next_try <= $1)
    ORDER BY deadline, saga_id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE saga
SET timer_attempts = CASE WHEN saga.timer_deadline = saga.deadline
                          THEN saga.timer_attempts ELSE 0 END,
    timer_deadline = saga.deadline,
    timer_next_try = $1 + $2::interval
FROM due
WHERE saga.saga_id = due.saga_id
RETURNING saga.saga_id, saga.deadline, saga.state, saga.timer_attempts
