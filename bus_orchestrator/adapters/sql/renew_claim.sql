-- Renew the lease of a command's claim while its call to the external system lasts, so a
-- compensation keeps waiting for a live call however long it takes. No row back: the
-- claim is settled, gone, or was replaced by a tombstone after it lapsed.
-- $1 command id, $2 lease (interval).
UPDATE adapter_claim
SET lease_until = now() + $2::interval
WHERE command_id = $1::text AND compensated_by IS NULL AND settled_at IS NULL
RETURNING 1
