-- load: whether $1 (consumer) has seen message $2 from source $5, the saga of type $3 with
-- correlation id $4, and whether events wait in the park for that saga. One round trip,
-- no transaction.
SELECT EXISTS (SELECT 1 FROM saga_inbox
               WHERE consumer = $1 AND source = $5 AND message_id = $2) AS seen,
       (SELECT state FROM saga WHERE saga_type = $3 AND correlation_id = $4) AS state,
       EXISTS (SELECT 1 FROM parked_event WHERE saga_type = $3 AND correlation_id = $4)
           AS parked
