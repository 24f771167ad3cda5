-- commit, existing saga: updates the saga if it is still at the version it was decided
-- from and, only then, writes the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $24 saga_id, $25 expected (old) version, $26 status, $27 new version,
--   $28 state (JSON text), $29 pending_command_id, $30 deadline, $31 updated_at.
-- Followed by commit_tail.sql, which takes $1..$23.
WITH saga_row AS (
    UPDATE saga
    SET status = $26, version = $27, state = $28::jsonb, pending_command_id = $29,
        deadline = $30, updated_at = $31
    WHERE saga_id = $24::uuid AND version = $25
    RETURNING saga_id
),
