-- Webhooks (issue 13): endpoints per event and the durable outbox of their deliveries.

-- An organizer's receiver. The signing secret is sealed with the master key (AAD = endpoint id
-- ‖ "webhook"); during a rotation's grace window the previous one signs too.
CREATE TABLE webhook_endpoints (
    id                    UUID PRIMARY KEY,
    event_id              UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    url                   TEXT NOT NULL,
    description           TEXT,
    event_types           TEXT NOT NULL,         -- JSON array of event type names
    enabled               BOOLEAN NOT NULL DEFAULT TRUE,
    secret                BYTEA NOT NULL,        -- sealed
    previous_secret       BYTEA,                 -- sealed; signs until previous_until
    previous_until        BIGINT,
    -- The first failed attempt since the last success (NULL while healthy), and how many
    -- attempts failed in a row: an endpoint failing for too long is disabled.
    failing_since         BIGINT,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    disabled_reason       TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
-- Every fact's unit of work asks for the enabled endpoints of its event.
CREATE INDEX webhook_endpoints_event ON webhook_endpoints (event_id) WHERE enabled;

-- One row per message per endpoint, written in the unit of work of the fact it announces.
-- Written on the hot path (a push of 1,000 check-ins), so no foreign keys, like checkins;
-- deleting an endpoint or an event deletes its rows explicitly.
CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY,            -- UUIDv7
    event_id         UUID NOT NULL,
    endpoint_id      UUID NOT NULL,
    message_id       UUID NOT NULL,               -- `webhook-id`, the same on every attempt
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,               -- the JSON body, exactly as signed and sent
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    -- A worker's lease on a claimed row: no other worker (process) takes it before then.
    locked_until     BIGINT,
    last_status      BIGINT,                      -- HTTP status of the last attempt
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
