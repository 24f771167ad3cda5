-- How many sagas there are by type and status (of the types in $1; NULL: all).
SELECT saga_type, status, count(*) AS n
FROM saga
WHERE ($1::text[] IS NULL OR saga_type = ANY($1::text[]))
GROUP BY saga_type, status
ORDER BY saga_type, status
