-- Zones of an event (rooms, sessions, areas) with a capacity. A zone is one bit of the tickets'
-- scopes bitmask; gates admit into the zones whose bit is in their zone_mask. Replicated to the
-- gates in their configuration.
CREATE TABLE zones (
    id            BLOB PRIMARY KEY,
    event_id      BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    bit           INTEGER NOT NULL CHECK (bit BETWEEN 0 AND 15),
    name          TEXT NOT NULL,
    capacity      INTEGER CHECK (capacity >= 0),
    soft_capacity INTEGER CHECK (soft_capacity >= 0),
    transfer      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (event_id, bit),
    UNIQUE (event_id, name)
);
