-- commit, new saga: inserts the saga and, only if it did not exist (by id or by type and
-- correlation id), the inbox, history and outbox rows. written = 0 means CONFLICT.
-- Saga parameters: $22 saga_id, $23 saga_type, $24 correlation_id, $25 status,
--   $26 version, $27 state (JSON text), $28 pending_command_id, $29 deadline,
--   $30 created_at, $31 updated_at.
-- Followed by commit_tail.sql, which takes $1..$21.
WITH saga_row AS (
    INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                      pending_command_id, deadline, created_at, updated_at)
    VALUES ($22::uuid, $23, $24, $25, $26, $27::jsonb, $28, $29, $30, $31)
    ON CONFLICT DO NOTHING
    RETURNING saga_id
),
