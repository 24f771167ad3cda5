-- commit, new saga: inserts the saga and, only if it did not exist (by id or by type and
-- correlation id), the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $26 saga_id, $27 saga_type, $28 correlation_id, $29 status,
--   $30 version, $31 state (JSON text), $32 pending_command_id, $33 deadline,
--   $34 created_at, $35 updated_at.
-- Followed by commit_tail.sql, which takes $1..$25.
WITH saga_row AS (
    INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                      pending_command_id, deadline, created_at, updated_at)
    VALUES ($26::uuid, $27, $28, $29, $30, $31::jsonb, $32, $33, $34, $35)
    ON CONFLICT DO NOTHING
    RETURNING saga_id
),
