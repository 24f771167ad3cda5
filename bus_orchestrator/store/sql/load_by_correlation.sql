-- load: whether $1 (consumer) has seen $2 (message id), and the saga of type $3 with
-- correlation id $4. One round trip, no transaction.
SELECT EXISTS (SELECT 1 FROM saga_inbox WHERE consumer = $1 AND message_id = $2) AS seen,
       (SELECT state FROM saga WHERE saga_type = $3 AND correlation_id = $4) AS state
