-- Before running a compensating command, lay a tombstone on the id of the command it
-- undoes, in one statement against that command's claim (the row lock orders the two):
-- no row yet: the tombstone is laid; a claim whose lease ran out unsettled: the tombstone
-- replaces it (lapsed); a live unsettled claim, a settled claim, or a tombstone: left as is.
-- One row back, from the row as it now stands, and the reply already recorded for the
-- compensating command itself.
-- $1 adapter, $2 compensating command id, $3 id of the command it undoes.
WITH mark AS (
    INSERT INTO adapter_claim AS c (command_id, adapter, compensated_by)
    VALUES ($3::text, $1::text, $2::text)
    ON CONFLICT (command_id) DO UPDATE
    SET compensated_by = CASE
            WHEN c.compensated_by IS NULL AND c.settled_at IS NULL AND c.lease_until <= now()
            THEN EXCLUDED.compensated_by
            ELSE c.compensated_by
        END,
        lapsed = c.lapsed
            OR (c.compensated_by IS NULL AND c.settled_at IS NULL AND c.lease_until <= now())
    RETURNING c.compensated_by IS NOT NULL AS tombstone, c.lapsed,
              c.settled_at IS NOT NULL AS settled
)
SELECT mark.tombstone, mark.lapsed, mark.settled,
       (SELECT reply::text FROM adapter_command
        WHERE adapter = $1::text AND command_id = $2::text) AS reply
FROM mark
