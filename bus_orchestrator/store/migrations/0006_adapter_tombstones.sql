-- Claims and tombstones of the adapter kit (bus_orchestrator.adapters.command_log), so a
-- compensating command that overtakes the command it undoes is not followed by that
-- command's effect. Before calling its external system, a command claims its id; a
-- compensating command (CloudEvents 'compensates' = that id) lays a tombstone there, in one
-- statement against the claim; a command finding a tombstone is refused, never run.
-- Keyed by the command id alone: the compensation may be handled by another adapter.

CREATE TABLE adapter_claim (
    command_id     text        NOT NULL,
    -- The adapter that claimed the id, or that laid the tombstone.
    adapter        text        NOT NULL,
    -- Set: a tombstone, laid by this compensating command. Unset: a claim.
    compensated_by text,
    -- A claim: until when a delivery may still be calling the external system. A
    -- redelivery taking the claim over renews it; a compensation finding it run out
    -- unsettled lays its tombstone over it (lapsed).
    lease_until    timestamptz,
    -- A claim: when the command's reply was recorded (its outcome is known).
    settled_at     timestamptz,
    -- A tombstone laid over a claim whose lease had run out.
    lapsed         boolean     NOT NULL DEFAULT false,
    -- A tombstone: when the command itself arrived and was refused.
    refused_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT adapter_claim_pkey PRIMARY KEY (command_id),
    CONSTRAINT adapter_claim_has_lease CHECK (compensated_by IS NOT NULL OR lease_until IS NOT NULL)
);

-- For the retention purge (BUS_COMMAND_LOG_RETENTION_SECONDS) by age. BRIN: tiny, and
-- nearly free to maintain on tables written in time order; the message path does not pay.
CREATE INDEX adapter_claim_created_at ON adapter_claim USING brin (created_at);
CREATE INDEX adapter_command_processed_at ON adapter_command USING brin (processed_at);
