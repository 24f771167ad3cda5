-- commit, a saga with entity locks reaches its final status: commit_update_saga.sql, and
-- its lock rows (held or still waiting) deleted in the same statement. A grant racing
-- this statement has locked the rows it updates; the delete waits for it and then
-- deletes the granted rows too (see migration 0008).
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
released AS (
    DELETE FROM saga_lock USING saga_row
    WHERE saga_lock.saga_id = saga_row.saga_id
),
