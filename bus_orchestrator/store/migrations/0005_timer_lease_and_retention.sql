-- Timers claimed with a lease and backed off when they fail; confirmed outbox rows without
-- their bodies; indexes for purging finished sagas and their history by age. Tables are
-- unqualified: migrate() sets search_path to the schema.

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

-- A confirmed row keeps no body or headers (they may hold secrets): see mark_sent.sql.
ALTER TABLE outbox
    ALTER COLUMN body DROP NOT NULL,
    ALTER COLUMN headers DROP NOT NULL;
UPDATE outbox SET body = NULL, headers = NULL WHERE sent_at IS NOT NULL;

-- purge_finished.sql: finished sagas by the time they finished. Partial: a saga enters it
-- once, when it finishes.
CREATE INDEX saga_finished_idx ON saga (updated_at)
    WHERE status IN ('completed', 'compensated', 'failed');

-- purge_orphan_history.sql: history rows of no saga (messages nobody awaited) by age.
CREATE INDEX saga_history_orphan_idx ON saga_history (at) WHERE saga_id IS NULL;
