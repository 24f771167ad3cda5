-- commit, a saga with entity locks reaches its final status: commit_update_saga.sql, and
-- its lock rows (held or still waiting) deleted in the same statement. A grant racing
-- this statement has locked the rows it updates; the delete waits for it and then
-- deletes the granted rows too (see migration 0008).
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
released AS (
    DELETE FROM saga_lock USING saga_row
    WHERE saga_lock.saga_id = saga_row.saga_id
),
