-- Zones of an event (rooms, sessions, areas) with a capacity. A zone is one bit of the tickets'
-- scopes bitmask; gates admit into the zones whose bit is in their zone_mask. Replicated to the
-- gates in their configuration.
CREATE TABLE zones (
    id            UUID PRIMARY KEY,
    event_id      UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    bit           BIGINT NOT NULL CHECK (bit BETWEEN 0 AND 15),
    name          TEXT NOT NULL,
    capacity      BIGINT CHECK (capacity >= 0),
    soft_capacity BIGINT CHECK (soft_capacity >= 0),
    transfer      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (event_id, bit),
    UNIQUE (event_id, name)
);
