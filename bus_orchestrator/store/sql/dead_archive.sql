-- Archive one dead letter; a redelivery of it (same fingerprint) writes nothing and
-- returns no row.
INSERT INTO dead_letter (id, fingerprint, message_id, message_type, source, correlation_id,
                         reason, detail, dead_lettered_by, original_exchange,
                         original_routing_key, saga_id, content_type, properties, headers,
                         body, body_bytes, dead_lettered_at)
VALUES ($1::uuid, $2::bytea, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text,
        $9::text, $10::text, $11::text, $12::uuid, $13::text, $14::text::jsonb,
        $15::text::jsonb, $16::bytea, $17::integer, $18::timestamptz)
ON CONFLICT (fingerprint) DO NOTHING
RETURNING id
