-- Serialises the folds of saga_counts.sql in this schema (released at commit).
SELECT pg_advisory_xact_lock(hashtextextended('bus_orchestrator.saga_count ' || current_schema(), 0))
