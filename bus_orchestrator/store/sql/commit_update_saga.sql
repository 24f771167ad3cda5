-- commit, existing saga: updates the saga if it is still at the version it was decided
-- from and, only then, writes the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $22 saga_id, $23 expected (old) version, $24 status, $25 new version,
--   $26 state (JSON text), $27 pending_command_id, $28 deadline, $29 updated_at.
-- Followed by commit_tail.sql, which takes $1..$21.
WITH saga_row AS (
    UPDATE saga
    SET status = $24, version = $25, state = $26::jsonb, pending_command_id = $27,
        deadline = $28, updated_at = $29
    WHERE saga_id = $22::uuid AND version = $23
    RETURNING saga_id
),
