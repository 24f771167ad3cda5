-- The events parked for the saga of type $1 and correlation id $2, in arrival order.
SELECT id, saga_type, correlation_id, message_id, source, message_type, exchange,
       routing_key, content_type, headers, body, expires_at
FROM parked_event
WHERE saga_type = $1 AND correlation_id = $2
ORDER BY id
