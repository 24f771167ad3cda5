-- A keyset page of dead letters, newest first: of status $1, reason $2, type $3, saga $4
-- (each NULL: any); after the row ($5 dead_lettered_at, $6 id) of the previous page; at
-- most $7. The order is that of dead_letter_newest_idx (and of the status index with a
-- status); the cursor condition breaks ties on the time by id. No body: a page is light.
SELECT id, message_id, message_type, source, correlation_id, reason, detail,
       dead_lettered_by, original_exchange, original_routing_key, saga_id, content_type,
       body_bytes, dead_lettered_at, archived_at, status, replayed_at, replayed_by,
       replay_reason, replayed_as, purged_at, purged_by, purge_reason
FROM dead_letter
WHERE ($1::text IS NULL OR status = $1::text)
  AND ($2::text IS NULL OR reason = $2::text)
  AND ($3::text IS NULL OR message_type = $3::text)
  AND ($4::uuid IS NULL OR saga_id = $4::uuid)
  AND ($5::timestamptz IS NULL
       OR (dead_lettered_at <= $5::timestamptz
           AND (dead_lettered_at < $5::timestamptz OR id > $6::uuid)))
ORDER BY dead_lettered_at DESC, id
LIMIT $7
