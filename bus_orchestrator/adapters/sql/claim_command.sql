-- Claim a command's id before calling the external system. A delivery finding a claim
-- takes it over (it is the same command, redelivered or resent) and renews its lease while
-- unsettled; a tombstone is never replaced, only marked refused. A claim on a command whose
-- reply is recorded already (its claim purged, or recorded before claims existed) is
-- settled at once, so no compensation waits for it. One row back: who laid the tombstone
-- standing there (null: none), and the reply already recorded for the command. The reply
-- is read with the statement's snapshot: one recorded concurrently is missed, and the
-- record that follows finds it (first writer wins).
-- $1 adapter, $2 command id, $3 lease (interval).
WITH stored AS (
    SELECT reply::text AS reply
    FROM adapter_command
    WHERE adapter = $1::text AND command_id = $2::text
), claim AS (
    INSERT INTO adapter_claim AS c (command_id, adapter, lease_until, settled_at)
    VALUES ($2::text, $1::text, now() + $3::interval, (SELECT now() FROM stored))
    ON CONFLICT (command_id) DO UPDATE
    SET settled_at = CASE
            WHEN c.compensated_by IS NULL THEN coalesce(c.settled_at, EXCLUDED.settled_at)
        END,
        lease_until = CASE
            WHEN c.compensated_by IS NULL AND c.settled_at IS NULL THEN EXCLUDED.lease_until
            ELSE c.lease_until
        END,
        refused_at = CASE
            WHEN c.compensated_by IS NOT NULL THEN coalesce(c.refused_at, now())
        END
    RETURNING c.compensated_by
)
SELECT claim.compensated_by, (SELECT reply FROM stored) AS reply
FROM claim
