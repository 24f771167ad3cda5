-- commit, new saga: inserts the saga and, only if it did not exist (by id or by type and
-- correlation id), the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $24 saga_id, $25 saga_type, $26 correlation_id, $27 status,
--   $28 version, $29 state (JSON text), $30 pending_command_id, $31 deadline,
--   $32 created_at, $33 updated_at.
-- Followed by commit_tail.sql, which takes $1..$23.
WITH saga_row AS (
    INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                      pending_command_id, deadline, created_at, updated_at)
    VALUES ($24::uuid, $25, $26, $27, $28, $29::jsonb, $30, $31, $32, $33)
    ON CONFLICT DO NOTHING
    RETURNING saga_id
),
