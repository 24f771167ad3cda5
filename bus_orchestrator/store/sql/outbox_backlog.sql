-- How many rows await a confirm, and the age in seconds of the oldest (NULL when none).
SELECT count(*) AS unsent,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age
FROM outbox
WHERE sent_at IS NULL
