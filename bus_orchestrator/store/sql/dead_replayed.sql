-- Record a replay: $1 id, $2 by whom, $3 why, $4 the message id it was published with.
UPDATE dead_letter
SET status = 'replayed', replayed_at = now(), replayed_by = $2::text,
    replay_reason = $3::text, replayed_as = $4::text
WHERE id = $1::uuid
RETURNING *
