-- The unfinished saga of each type (of the types in $1; NULL: all) that started first.
-- $2: the unfinished statuses (every SagaStatus that is not terminal). For each type and
-- unfinished status, the oldest creation time is the first entry of that status's range
-- of saga_status_newest_idx (read backwards, its type tested in the index); then the
-- sagas of that very time, of which the oldest per type, ties broken by saga id. So it
-- reads a few index entries per type, however many sagas run. Every saga's type is in
-- saga_count or in the deltas not yet folded into it (migration 0012).
SELECT DISTINCT ON (s.saga_type)
       s.saga_type, s.saga_id::text AS saga_id, s.correlation_id, s.status, s.created_at
FROM unnest(coalesce($1::text[], ARRAY(SELECT saga_type FROM saga_count
                                       UNION SELECT saga_type FROM saga_count_delta)))
         AS t(saga_type)
CROSS JOIN unnest($2::text[]) AS u(status)
CROSS JOIN LATERAL (SELECT min(created_at) AS first FROM saga
                    WHERE saga.status = u.status AND saga.saga_type = t.saga_type) AS m
JOIN saga s ON s.status = u.status AND s.saga_type = t.saga_type AND s.created_at = m.first
ORDER BY s.saga_type, s.created_at, s.saga_id
