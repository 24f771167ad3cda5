-- Records the schedules of app $1 (names $2, the slot each plans next $3), those not known
-- yet as known since $4, and returns the state of each.
INSERT INTO schedule_state (app, schedule, registered_at, next_slot)
SELECT $1::text, s.name, $4::timestamptz, s.next_slot
FROM unnest($2::text[], $3::timestamptz[]) AS s(name, next_slot)
ON CONFLICT (app, schedule) DO UPDATE SET next_slot = EXCLUDED.next_slot
RETURNING schedule, registered_at, last_slot, last_fired_at, last_event_id, next_slot
