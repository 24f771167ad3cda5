-- load: whether $1 (consumer) has seen message $2 from source $4, and the saga with id $3
-- (NULL when the id is not a UUID, which finds nothing). One round trip, no transaction.
SELECT EXISTS (SELECT 1 FROM saga_inbox
               WHERE consumer = $1 AND source = $4 AND message_id = $2) AS seen,
       (SELECT state FROM saga WHERE saga_id = $3::uuid) AS state
