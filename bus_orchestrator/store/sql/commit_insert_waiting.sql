-- commit, new saga that waits for its entity locks: commit_insert_saga.sql, and the
-- saga's place in the queue of each of its lock keys ($36), in the same statement.
-- Saga parameters: $26 saga_id, $27 saga_type, $28 correlation_id, $29 status,
--   $30 version, $31 state (JSON text), $32 pending_command_id, $33 deadline,
--   $34 created_at, $35 updated_at, $36 lock keys (sorted, no repeats).
-- Followed by commit_tail.sql, which takes $1..$25.
WITH saga_row AS (
    INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                      pending_command_id, deadline, created_at, updated_at)
    VALUES ($26::uuid, $27, $28, $29, $30, $31::jsonb, $32, $33, $34, $35)
    ON CONFLICT DO NOTHING
    RETURNING saga_id
),
queued AS (
    INSERT INTO saga_lock (lock_key, saga_id)
    SELECT k.lock_key, saga_row.saga_id
    FROM saga_row, unnest($36::text[]) AS k(lock_key)
),
