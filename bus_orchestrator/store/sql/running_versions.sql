-- Running sagas of the types in $1 by type and definition version: how many, and the ids
-- of the oldest few. A state stored before versioning has no definition_version: version 1.
SELECT saga_type,
       COALESCE((state->>'definition_version')::int, 1) AS definition_version,
       count(*) AS running,
       (array_agg(saga_id::text ORDER BY created_at, saga_id))[1:5] AS saga_ids
FROM saga
WHERE saga_type = ANY($1::text[])
  AND status NOT IN ('completed', 'compensated', 'failed')
GROUP BY 1, 2
ORDER BY 1, 2
