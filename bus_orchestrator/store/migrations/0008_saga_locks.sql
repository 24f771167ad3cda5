-- Entity locks (SagaDefinition.locks): one row per saga and lock key it takes. A row with
-- granted_at is the key's holder (at most one per key: saga_lock_holder_key); one without
-- waits in the key's queue, in seq order. A saga's rows are inserted by the commit that
-- starts it (commit_insert_waiting.sql), all granted at once (grant_locks.sql), and
-- deleted by the commit that gives it a final status (commit_update_release.sql).
-- Holders and waiters are one table so that a final commit racing a grant still deletes
-- the rows the grant has just updated: it waits on their row locks and follows them.
-- Lock keys are the entity's, not an app's: sagas of every type and app on the database
-- that name one key exclude each other.
CREATE TABLE saga_lock (
    lock_key    text        NOT NULL,
    saga_id     uuid        NOT NULL,
    seq         bigserial   NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    granted_at  timestamptz,
    CONSTRAINT saga_lock_pkey PRIMARY KEY (saga_id, lock_key)
);

CREATE UNIQUE INDEX saga_lock_holder_key ON saga_lock (lock_key) WHERE granted_at IS NOT NULL;
CREATE INDEX saga_lock_queue_idx ON saga_lock (lock_key, seq);
