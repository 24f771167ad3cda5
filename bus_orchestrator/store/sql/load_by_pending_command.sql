-- load: whether $1 (consumer) has seen message $2 from source $4, and the saga awaiting a
-- reply to command $3. One round trip, no transaction.
SELECT EXISTS (SELECT 1 FROM saga_inbox
               WHERE consumer = $1 AND source = $4 AND message_id = $2) AS seen,
       (SELECT state FROM saga WHERE pending_command_id = $3 LIMIT 1) AS state
