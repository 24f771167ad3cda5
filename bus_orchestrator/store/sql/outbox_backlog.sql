-- How many rows of app $1 (or of no app; NULL: of any app) await a confirm, and the age in
-- seconds of the oldest (NULL when none).
SELECT count(*) AS unsent,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age
FROM outbox
WHERE sent_at IS NULL
  AND ($1::text IS NULL OR app = $1::text OR app IS NULL)
