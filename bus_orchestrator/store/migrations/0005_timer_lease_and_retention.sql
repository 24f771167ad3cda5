-- Timers claimed with a lease and backed off when they fail. Tables are unqualified:
-- migrate() sets search_path to the schema.

-- The timer of a saga, as the timer loop sees it. The three columns are about the deadline
-- in timer_deadline only: once a commit moves the saga's deadline they no longer apply, so
-- the message path never has to reset them.
--   timer_attempts  failed tries of that deadline so far;
--   timer_next_try  no process claims it before then: the end of a claim's lease, or of
--                   the backoff after a failed try.
-- A constant default: adding the columns rewrites nothing.
ALTER TABLE saga
    ADD COLUMN timer_deadline timestamptz,
    ADD COLUMN timer_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN timer_next_try timestamptz;
