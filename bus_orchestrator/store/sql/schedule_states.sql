-- The state of each schedule of app $1, by name.
SELECT schedule, registered_at, last_slot, last_fired_at, last_event_id, next_slot
FROM schedule_state
WHERE app = $1::text
ORDER BY schedule
