-- Records that try number $3 of the timer of saga $1 for deadline $2 failed: no process
-- claims it again before $4. Changes nothing once the saga's deadline has moved on.
UPDATE saga SET timer_attempts = $3, timer_next_try = $4
WHERE saga_id = $1::uuid AND deadline = $2 AND timer_deadline = $2
