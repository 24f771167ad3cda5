-- Sagas with id $1 (NULL when the string is not a UUID) or correlation id $2, newest first.
SELECT state FROM saga
WHERE saga_id = $1::uuid OR correlation_id = $2
ORDER BY created_at DESC, saga_id
