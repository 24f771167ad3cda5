-- One dead letter, whole, locked until the transaction ends: a replay publishes while it
-- holds the row, so two replays of one dead letter cannot both publish.
SELECT * FROM dead_letter WHERE id = $1::uuid FOR UPDATE
