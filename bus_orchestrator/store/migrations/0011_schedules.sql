-- Schedules (App.schedules): which slots of each app's schedules fired. A slot fires once
-- however many coordinators run: the statement that claims it (schedule_fire.sql) inserts
-- its schedule_firing row, moves the schedule's state on and writes the event's outbox row
-- together, and the primary key of schedule_firing lets only one of them claim a slot.
CREATE TABLE schedule_state (
    app           text        NOT NULL,
    schedule      text        NOT NULL,
    -- since when the schedule is known: slots after it and before a coordinator started
    -- were missed (fired once at start-up with catch_up, else skipped)
    registered_at timestamptz NOT NULL,
    last_slot     timestamptz,
    last_fired_at timestamptz,
    last_event_id text,
    next_slot     timestamptz,
    CONSTRAINT schedule_state_pkey PRIMARY KEY (app, schedule)
);

CREATE TABLE schedule_firing (
    app        text        NOT NULL,
    schedule   text        NOT NULL,
    slot       timestamptz NOT NULL,
    event_id   text        NOT NULL,
    event_type text        NOT NULL,
    fired_at   timestamptz NOT NULL,
    CONSTRAINT schedule_firing_pkey PRIMARY KEY (app, schedule, slot)
);

-- the purge of old firings, oldest first
CREATE INDEX schedule_firing_fired_idx ON schedule_firing (app, fired_at);
