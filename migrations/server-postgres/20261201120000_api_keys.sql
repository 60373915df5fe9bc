-- Service API keys: long-lived bearer tokens for the systems that call the API (CRM, badge
-- stations, BI). Only the SHA-256 of the key is stored; `event_id` NULL means every event.
CREATE TABLE api_keys (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    key_hash      BYTEA NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,                 -- the key's first characters, to recognise it
    role          TEXT NOT NULL CHECK (role IN ('admin', 'staff', 'viewer')),
    event_id      UUID,
    created_by    UUID,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
