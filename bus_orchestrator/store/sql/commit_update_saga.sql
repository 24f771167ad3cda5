-- commit, existing saga: updates the saga if it is still at the version it was decided
-- from and, only then, writes the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $25 saga_id, $26 expected (old) version, $27 status, $28 new version,
--   $29 state (JSON text), $30 pending_command_id, $31 deadline, $32 updated_at.
-- Followed by commit_tail.sql, which takes $1..$24.
WITH saga_row AS (
    UPDATE saga
    SET status = $27, version = $28, state = $29::jsonb, pending_command_id = $30,
        deadline = $31, updated_at = $32
    WHERE saga_id = $25::uuid AND version = $26
    RETURNING saga_id
),
