-- Deletes up to 5000 firings of app $1 done more than $2 ago (oldest first); returns how
-- many. The newest slot of each schedule stays in schedule_state, which alone keeps an
-- older slot from firing again.
WITH gone AS (
    DELETE FROM schedule_firing
    WHERE (app, schedule, slot) IN (
        SELECT app, schedule, slot FROM schedule_firing
        WHERE app = $1::text AND fired_at < now() - $2::interval
        ORDER BY fired_at
        LIMIT 5000
    )
    RETURNING 1
)
SELECT count(*) FROM gone
