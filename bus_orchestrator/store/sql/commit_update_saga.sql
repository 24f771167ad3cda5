-- commit, existing saga: updates the saga if it is still at the version it was decided
-- from and, only then, writes the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $26 saga_id, $27 expected (old) version, $28 status, $29 new version,
--   $30 state (JSON text), $31 pending_command_id, $32 deadline, $33 updated_at.
-- Followed by commit_tail.sql, which takes $1..$25.
WITH saga_row AS (
    UPDATE saga
    SET status = $28, version = $29, state = $30::jsonb, pending_command_id = $31,
        deadline = $32, updated_at = $33
    WHERE saga_id = $26::uuid AND version = $27
    RETURNING saga_id
),
