-- Takes the transaction's advisory lock of each key in $1, in one fixed order (by the
-- lock's number), so two grants never wait for each other in a circle. Two keys that
-- share a number only wait for each other.
SELECT pg_advisory_xact_lock(h.n)
FROM (
    SELECT DISTINCT hashtextextended('bus_orchestrator.saga_lock:' || k, 0) AS n
    FROM unnest($1::text[]) AS k
    ORDER BY n
) AS h
