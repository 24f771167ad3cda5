-- Forgets parked event $1 (applied, or dead-lettered).
DELETE FROM parked_event WHERE id = $1
