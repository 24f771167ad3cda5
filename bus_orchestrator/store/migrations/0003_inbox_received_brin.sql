-- For purging old inbox rows by age. BRIN: tiny, and nearly free to maintain on a table
-- that is only appended to in time order, so the message path does not pay for it.
CREATE INDEX saga_inbox_received_at ON saga_inbox USING brin (received_at);
