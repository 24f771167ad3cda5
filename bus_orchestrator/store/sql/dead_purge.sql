-- Purge a dead letter: its body is dropped, what it was stays. $1 id, $2 by whom, $3 why.
-- No row when there is none, or it is purged already.
UPDATE dead_letter
SET status = 'purged', body = NULL, purged_at = now(), purged_by = $2::text,
    purge_reason = $3::text
WHERE id = $1::uuid AND status <> 'purged'
RETURNING *
