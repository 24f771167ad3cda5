-- Several applications on one database (one schema): the rows each app's coordinator
-- writes name the app, so its relay and housekeeping take only its own. Sagas and parked
-- events are an app's by their saga type (saga names differ between apps); the inbox,
-- the history and the outbox by this column. Rows written before this migration have no
-- app (NULL): whichever app's relay or housekeeping comes first takes them, as before.
-- Nullable with no default: adding the columns rewrites nothing.
ALTER TABLE outbox ADD COLUMN app text;
ALTER TABLE saga_inbox ADD COLUMN app text;
ALTER TABLE saga_history ADD COLUMN app text;

-- Which app runs each saga type: a saga type is one app's on a database (its rows are
-- found by type), so a second app defining it is refused at start-up. A type the app no
-- longer defines stays its own: its timers are still claimed by that app, and fail.
CREATE TABLE saga_type_app (
    saga_type     text        PRIMARY KEY,
    app           text        NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
