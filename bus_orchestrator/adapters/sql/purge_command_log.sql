-- Forgets up to 5000 processed commands and 5000 claims or tombstones older than $1;
-- returns how many rows went. The retention must outlast any redelivery or resend: a
-- command seen again after it is purged would be handled anew.
WITH commands AS (
    DELETE FROM adapter_command
    WHERE ctid IN (
        SELECT ctid FROM adapter_command
        WHERE processed_at < now() - $1::interval
        LIMIT 5000
    )
    RETURNING 1
), claims AS (
    DELETE FROM adapter_claim
    WHERE ctid IN (
        SELECT ctid FROM adapter_claim
        WHERE created_at < now() - $1::interval
        LIMIT 5000
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM commands) + (SELECT count(*) FROM claims)
