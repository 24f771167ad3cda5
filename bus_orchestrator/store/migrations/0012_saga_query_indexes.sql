-- The API's saga queries (GET /sagas with filters, GET /stats) over many sagas: index scans
-- only, no scan of the whole saga table (bench/api_queries.py measures them).
--
-- GET /sagas?status=...: newest first within one status. The filters the API adds (type,
-- the app's types) are key columns after the order, so a scan tests them on the index
-- entry and visits the saga row only for a match: a rare combination (failed sagas of one
-- type) does not read a heap page per saga it skips.
-- What the hot path pays: every saga write already adds an entry to each saga index (each
-- changes updated_at, indexed in saga_finished_idx, so no update is HOT); this is one more.
-- Its keys change only when the status does, so the entries of older row versions are
-- removed from the page as it fills (bottom-up deletion) instead of piling up until
-- VACUUM. For that reason updated_at (which changes at every write) is not a key here:
-- updated_before (stuck sagas) is tested on the row; the stuck ones are found among the
-- sagas of their status alone.
CREATE INDEX saga_status_newest_idx ON saga (status, created_at DESC, saga_id, saga_type);

-- GET /sagas without a status: the same on the newest-first index, which gets the type
-- and status as trailing keys (wider entries, no more of them).
DROP INDEX saga_newest_idx;
CREATE INDEX saga_newest_idx ON saga (created_at DESC, saga_id, saga_type, status);

-- GET /stats: the number of sagas by type and status, exact without counting a million
-- index entries. A trigger appends a +1 / -1 row to saga_count_delta when a saga is
-- inserted, deleted or changes status (a few times in a saga's life, not at every step);
-- the table has no index and no unique key, so concurrent writers never wait on each other
-- there. Reading the counts folds the deltas into saga_count first (saga_counts.sql).
CREATE TABLE saga_count (
    saga_type text   NOT NULL,
    status    text   NOT NULL,
    n         bigint NOT NULL,
    CONSTRAINT saga_count_pkey PRIMARY KEY (saga_type, status)
);

CREATE TABLE saga_count_delta (
    saga_type text    NOT NULL,
    status    text    NOT NULL,
    d         integer NOT NULL
);

-- search_path FROM CURRENT: the schema being migrated, whatever the writer's session says.
CREATE FUNCTION saga_count_track() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO saga_count_delta (saga_type, status, d)
        VALUES (OLD.saga_type, OLD.status, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO saga_count_delta (saga_type, status, d)
        VALUES (NEW.saga_type, NEW.status, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER saga_count_rows AFTER INSERT OR DELETE ON saga
    FOR EACH ROW EXECUTE FUNCTION saga_count_track();
CREATE TRIGGER saga_count_status AFTER UPDATE OF saga_type, status ON saga
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.saga_type IS DISTINCT FROM NEW.saga_type)
    EXECUTE FUNCTION saga_count_track();

-- The sagas already there. The trigger's lock on saga holds writers off until this
-- migration commits, so no write falls between this count and the trigger.
INSERT INTO saga_count (saga_type, status, n)
SELECT saga_type, status, count(*) FROM saga GROUP BY saga_type, status;
