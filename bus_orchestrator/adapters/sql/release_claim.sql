-- Drop the unsettled claim of a command that was dead-lettered, so a compensation waiting
-- for its outcome goes ahead (and tombstones it) at once.
-- $1 command id.
DELETE FROM adapter_claim
WHERE command_id = $1::text AND compensated_by IS NULL AND settled_at IS NULL
