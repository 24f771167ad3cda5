-- load: whether $1 (consumer) has seen $2 (message id), and the saga awaiting a reply to
-- command $3. One round trip, no transaction.
SELECT EXISTS (SELECT 1 FROM saga_inbox WHERE consumer = $1 AND message_id = $2) AS seen,
       (SELECT state FROM saga WHERE pending_command_id = $3 LIMIT 1) AS state
