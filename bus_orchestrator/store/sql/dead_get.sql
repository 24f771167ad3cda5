-- One dead letter, whole.
SELECT * FROM dead_letter WHERE id = $1::uuid
