-- Deletes up to 5000 history rows of no saga recorded more than $1 ago by app $2 (or by no
-- app, before migration 0007; NULL: by any app), oldest first; returns how many. "No
-- saga": messages nobody awaited (saga_id NULL), and events parked for a saga that never
-- started (they name its future id).
WITH gone AS (
    DELETE FROM saga_history
    WHERE id IN (
        SELECT id FROM (
            (SELECT id, at FROM saga_history
             WHERE saga_id IS NULL AND at < now() - $1::interval
               AND ($2::text IS NULL OR app = $2::text OR app IS NULL)
             ORDER BY at
             LIMIT 5000)
            UNION ALL
            (SELECT h.id, h.at FROM saga_history h
             WHERE h.outcome IN ('parked', 'dead-lettered') AND h.at < now() - $1::interval
               AND ($2::text IS NULL OR h.app = $2::text OR h.app IS NULL)
               AND NOT EXISTS (SELECT 1 FROM saga s WHERE s.saga_id = h.saga_id)
             ORDER BY h.at
             LIMIT 5000)
        ) AS orphans
        ORDER BY at
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
