-- The size of each payload as JSON, kept with the block, so that a page of
-- blocks is bounded in bytes without reading the payloads: a full block is
-- up to 8 MiB since Osaka (EIP-7934), about 17 MB of JSON.
ALTER TABLE blocks ADD COLUMN payload_bytes BIGINT NOT NULL
    GENERATED ALWAYS AS (coalesce(octet_length(payload::text), 0)) STORED;
