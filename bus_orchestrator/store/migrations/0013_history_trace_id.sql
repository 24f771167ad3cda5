-- Each history row names the trace of the work that wrote it (a message handled, a timer,
-- an operator's repair), so an entry links to its own trace in Jaeger. NULL when tracing
-- is off, and for rows written before this migration. No default: adding it rewrites
-- nothing.
ALTER TABLE saga_history ADD COLUMN trace_id text;
