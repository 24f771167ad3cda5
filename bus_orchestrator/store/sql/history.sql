-- The audit log of saga $1, oldest first.
SELECT at, direction, message_id, message_type, correlation_id, causation_id, outcome, note,
       payload, trace_id
FROM saga_history
WHERE saga_id = $1::uuid
ORDER BY id
