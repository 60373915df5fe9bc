-- Usher server schema, PostgreSQL flavour. The SQLite twin lives in ../server-sqlite/ and must
-- stay column-for-column identical so one SQL text fits both backends (DESIGN §9):
--   * times are BIGINT unix milliseconds (ticket validity: unix seconds, as signed);
--   * ids are UUID here and BLOB there (sqlx's uuid feature encodes both);
--   * JSON is TEXT; booleans BOOLEAN here, INTEGER there; every integer is BIGINT (bound as i64).
-- Never edit this file once it has landed: add a new timestamped migration instead.

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,          -- stored trimmed and lower-case
    password_hash TEXT NOT NULL,                 -- argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('admin', 'staff', 'viewer')),
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE events (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    venue       TEXT,
    starts_at   BIGINT NOT NULL,
    ends_at     BIGINT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('draft', 'live', 'closed', 'archived')),
    settings    TEXT NOT NULL,                   -- JSON object
    event_tag   BIGINT NOT NULL UNIQUE,          -- random u32, signed into every ticket
    ble_secret  BYTEA NOT NULL,                  -- sealed (ChaCha20-Poly1305, master key)
    mesh_key    BYTEA NOT NULL,                  -- sealed
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One ed25519 key per event at a time; retired keys still verify the tickets they signed.
CREATE TABLE signing_keys (
    event_id    UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    key_id      BIGINT NOT NULL,                 -- u32 in the ticket
    public_key  BYTEA NOT NULL,
    secret_key  BYTEA NOT NULL,                  -- sealed, AAD = event id || key_id
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT,
    PRIMARY KEY (event_id, key_id)
);

-- participants, tickets and changes take bulk imports (100,000 rows in seconds), so they carry
-- no foreign keys: PostgreSQL checks those with a trigger per row, which costs more than the
-- insert itself. Every row is scoped by event_id; deleting an event deletes them explicitly.
CREATE TABLE participants (
    id             UUID NOT NULL,                -- UUIDv7: time-ordered, the paging cursor
    event_id       UUID NOT NULL,
    external_id    TEXT COLLATE "C",             -- byte order: cheap index upkeep, exact match
    name           TEXT,                         -- NULL once erased
    email          TEXT,
    email_key      TEXT COLLATE "C",             -- trimmed lower-case e-mail, the upsert key
    phone          TEXT,
    organization   TEXT,
    attention      TEXT,
    ticket_type    TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}',   -- JSON object
    ticket_serial  BIGINT,                       -- the current ticket (valid or revoked)
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    erased_at      BIGINT,
    -- (event_id, id): every lookup names the event, and paging walks this index in id order.
    PRIMARY KEY (event_id, id)
);
CREATE UNIQUE INDEX participants_external_id ON participants (event_id, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX participants_email_key ON participants (event_id, email_key);

-- Serials are never reused; allocated outside the writing transaction (gaps are harmless).
CREATE TABLE serial_counters (
    event_id     UUID PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    last_serial  BIGINT NOT NULL
);

CREATE TABLE tickets (
    event_id       UUID NOT NULL,
    serial         BIGINT NOT NULL,
    participant_id UUID NOT NULL,
    key_id         BIGINT NOT NULL,
    short_code     BIGINT NOT NULL,              -- the 55-bit value of the XXXX-XXXX-XXXX code
    scopes         BIGINT NOT NULL,
    valid_from     BIGINT NOT NULL,              -- unix seconds, as signed
    valid_until    BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
    issued_at      BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoke_reason  TEXT,
    PRIMARY KEY (event_id, serial),
    UNIQUE (event_id, short_code)
);

CREATE TABLE gates (
    id             UUID PRIMARY KEY,
    event_id       UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    zone           TEXT,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out', 'both')),
    zone_mask      BIGINT NOT NULL DEFAULT 0,
    allow_reentry  BOOLEAN NOT NULL DEFAULT FALSE,
    beacon_config  TEXT,                         -- JSON object or NULL
    mesh_addr      TEXT,
    is_active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX gates_event ON gates (event_id, id);

-- One-time codes an organizer hands to a kiosk; exchanged at POST /sync/v1/enroll for a gate
-- credential. Only the SHA-256 of the normalised code is stored.
CREATE TABLE enrollment_codes (
    code_hash   BYTEA PRIMARY KEY,
    event_id    UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    gate_id     UUID NOT NULL REFERENCES gates (id) ON DELETE CASCADE,
    created_by  UUID,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX enrollment_codes_gate ON enrollment_codes (gate_id);

-- Bearer credentials of enrolled gates (random 256 bits, stored as SHA-256).
CREATE TABLE gate_credentials (
    token_hash    BYTEA PRIMARY KEY,
    gate_id       UUID NOT NULL REFERENCES gates (id) ON DELETE CASCADE,
    event_id      UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    device_name   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX gate_credentials_gate ON gate_credentials (gate_id);

-- The grow-only check-in log pushed by gates (DESIGN §4/§5).
CREATE TABLE checkins (
    id                 UUID PRIMARY KEY,
    event_id           UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    gate_id            UUID NOT NULL REFERENCES gates (id) ON DELETE CASCADE,
    seq                BIGINT NOT NULL,
    ticket_serial      BIGINT,
    code               TEXT,
    method             TEXT NOT NULL,
    direction          TEXT NOT NULL,
    decision           TEXT NOT NULL,
    reason             TEXT,
    hlc                BIGINT NOT NULL,
    scanned_at         BIGINT NOT NULL,
    replica_cursor     BIGINT NOT NULL,
    operator_override  TEXT,
    undoes             UUID,
    received_at        BIGINT NOT NULL,
    UNIQUE (gate_id, seq)
);
CREATE INDEX checkins_ticket ON checkins (event_id, ticket_serial, hlc);
CREATE INDEX checkins_event ON checkins (event_id, received_at);

-- Derived admission state per ticket: the fold of its check-ins (DESIGN §5).
CREATE TABLE presence (
    event_id           UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    serial             BIGINT NOT NULL,
    inside             BOOLEAN NOT NULL,
    canonical_checkin  UUID,
    last_checkin       UUID,
    last_gate          UUID,
    hlc                BIGINT NOT NULL,
    entries            BIGINT NOT NULL DEFAULT 0,
    exits              BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, serial)
);

CREATE TABLE conflicts (
    id               UUID PRIMARY KEY,
    event_id         UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    ticket_serial    BIGINT NOT NULL,
    trigger_checkin  UUID NOT NULL,
    checkin_ids      TEXT NOT NULL,              -- JSON array of UUIDs
    gate_ids         TEXT NOT NULL,              -- JSON array of UUIDs
    detected_at      BIGINT NOT NULL,
    resolution       TEXT,
    resolved_by      UUID,
    resolved_at      BIGINT,
    UNIQUE (event_id, kind, trigger_checkin)
);
CREATE INDEX conflicts_event ON conflicts (event_id, detected_at);

-- The replication change log gates pull (DESIGN §4): one latest row per entity, so a
-- bootstrap from cursor 0 stays compact while tombstones remain. `change_seq` comes from
-- change_counters, bumped as the last statement of the writing transaction: the row lock
-- serialises allocation, so per event sequence order = commit order and a reader polling
-- `change_seq > cursor` never skips a row that commits late.
CREATE TABLE changes (
    event_id    UUID NOT NULL,                   -- no foreign key: see participants
    kind        TEXT COLLATE "C" NOT NULL,
    entity_key  TEXT COLLATE "C" NOT NULL,
    change_seq  BIGINT NOT NULL,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    data        TEXT NOT NULL,                   -- JSON of sync_protocol::wire::ChangeData's payload
    PRIMARY KEY (event_id, kind, entity_key)
);
CREATE INDEX changes_seq ON changes (event_id, change_seq);

CREATE TABLE change_counters (
    event_id  UUID PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    last_seq  BIGINT NOT NULL
);

-- Who did what. No foreign keys: the trail outlives the rows it talks about.
CREATE TABLE audit_log (
    id        UUID PRIMARY KEY,                  -- UUIDv7, time-ordered
    at        BIGINT NOT NULL,
    actor_id  UUID,
    actor     TEXT NOT NULL,                     -- e-mail, or "system"
    action    TEXT NOT NULL,
    event_id  UUID,
    target    TEXT,
    detail    TEXT NOT NULL                      -- JSON object
);
CREATE INDEX audit_log_event ON audit_log (event_id, id);
