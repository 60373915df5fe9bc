-- Webhooks (issue 13): endpoints per event and the durable outbox of their deliveries.

-- An organizer's receiver. The signing secret is sealed with the master key (AAD = endpoint id
-- ‖ "webhook"); during a rotation's grace window the previous one signs too.
CREATE TABLE webhook_endpoints (
    id                    BLOB PRIMARY KEY,
    event_id              BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    url                   TEXT NOT NULL,
    description           TEXT,
    event_types           TEXT NOT NULL,         -- JSON array of event type names
    enabled               INTEGER NOT NULL DEFAULT 1,
    secret                BLOB NOT NULL,        -- sealed
    previous_secret       BLOB,                 -- sealed; signs until previous_until
    previous_until        INTEGER,
    -- The first failed attempt since the last success (NULL while healthy), and how many
    -- attempts failed in a row: an endpoint failing for too long is disabled.
    failing_since         INTEGER,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    disabled_reason       TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
-- Every fact's unit of work asks for the enabled endpoints of its event.
CREATE INDEX webhook_endpoints_event ON webhook_endpoints (event_id) WHERE enabled;

-- One row per message per endpoint, written in the unit of work of the fact it announces.
-- Written on the hot path (a push of 1,000 check-ins), so no foreign keys, like checkins;
-- deleting an endpoint or an event deletes its rows explicitly.
CREATE TABLE webhook_deliveries (
    id               BLOB PRIMARY KEY,            -- UUIDv7
    event_id         BLOB NOT NULL,
    endpoint_id      BLOB NOT NULL,
    message_id       BLOB NOT NULL,               -- `webhook-id`, the same on every attempt
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,               -- the JSON body, exactly as signed and sent
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    -- A worker's lease on a claimed row: no other worker (process) takes it before then.
    locked_until     INTEGER,
    last_status      INTEGER,                      -- HTTP status of the last attempt
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
