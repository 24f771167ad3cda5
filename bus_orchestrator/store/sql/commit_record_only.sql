-- commit, no saga change: records the message in the inbox and history (and outbox).
-- The head only makes saga_row non-empty. Followed by commit_tail.sql, which takes $1..$25.
WITH saga_row AS (
    SELECT 1
),
