-- A keyset page of sagas, newest first: of status $1, type $2, one of the types $3 (the
-- app's scope), correlation id $4, created after $5 and before $6, updated before $7 (each
-- NULL: any); after the saga ($8 created_at, $9 saga_id) of the previous page; at most $10.
-- The order is that of saga_newest_idx (created_at DESC, saga_id, ...) and, within a status,
-- of saga_status_newest_idx (status, created_at DESC, saga_id, ...): their trailing keys
-- (type, status) let a scan test those filters on the index entry (0012).
-- "created_at <= $8" bounds the scan, the rest of the cursor condition breaks ties on
-- created_at by saga id.
SELECT state FROM saga
WHERE ($1::text IS NULL OR status = $1::text)
  AND ($2::text IS NULL OR saga_type = $2::text)
  AND ($3::text[] IS NULL OR saga_type = ANY($3::text[]))
  AND ($4::text IS NULL OR correlation_id = $4::text)
  AND ($5::timestamptz IS NULL OR created_at > $5::timestamptz)
  AND ($6::timestamptz IS NULL OR created_at < $6::timestamptz)
  AND ($7::timestamptz IS NULL OR updated_at < $7::timestamptz)
  AND ($8::timestamptz IS NULL
       OR (created_at <= $8::timestamptz
           AND (created_at < $8::timestamptz OR saga_id > $9::uuid)))
ORDER BY created_at DESC, saga_id
LIMIT $10
