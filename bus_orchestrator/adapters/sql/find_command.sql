-- The reply stored for a command, as JSON text; no row when it was never processed.
-- $1 adapter, $2 command id.
SELECT reply::text AS reply
FROM adapter_command
WHERE adapter = $1::text AND command_id = $2::text
