-- Record a processed command and its reply, first writer wins, and settle the command's
-- claim (a compensation waiting for its outcome may go ahead). reply_id is null when a
-- concurrent delivery of the same command recorded first: read its reply with
-- find_command.sql, in a new statement, whose snapshot sees that row (a CTE here would not).
-- tombstoned: a tombstone stands in the command's id (null: no claim row).
-- $1 adapter, $2 command id, $3 command type, $4 correlation id, $5 reply id,
-- $6 reply type, $7 reply (JSON text).
WITH recorded AS (
    INSERT INTO adapter_command (adapter, command_id, command_type, correlation_id,
                                 reply_id, reply_type, reply)
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text::jsonb)
    ON CONFLICT (adapter, command_id) DO NOTHING
    RETURNING reply_id
), settled AS (
    UPDATE adapter_claim
    SET settled_at = CASE WHEN compensated_by IS NULL THEN coalesce(settled_at, now()) END
    WHERE command_id = $2::text
    RETURNING compensated_by IS NOT NULL AS tombstoned
)
SELECT (SELECT reply_id FROM recorded) AS reply_id,
       (SELECT tombstoned FROM settled) AS tombstoned
