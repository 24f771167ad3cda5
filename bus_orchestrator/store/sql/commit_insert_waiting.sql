-- commit, new saga that waits for its entity locks: commit_insert_saga.sql, and the
-- saga's place in the queue of each of its lock keys ($35), in the same statement.
-- Saga parameters: $25 saga_id, $26 saga_type, $27 correlation_id, $28 status,
--   $29 version, $30 state (JSON text), $31 pending_command_id, $32 deadline,
--   $33 created_at, $34 updated_at, $35 lock keys (sorted, no repeats).
-- Followed by commit_tail.sql, which takes $1..$24.
WITH saga_row AS (
    INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                      pending_command_id, deadline, created_at, updated_at)
    VALUES ($25::uuid, $26, $27, $28, $29, $30::jsonb, $31, $32, $33, $34)
    ON CONFLICT DO NOTHING
    RETURNING saga_id
),
queued AS (
    INSERT INTO saga_lock (lock_key, saga_id)
    SELECT k.lock_key, saga_row.saga_id
    FROM saga_row, unnest($35::text[]) AS k(lock_key)
),
