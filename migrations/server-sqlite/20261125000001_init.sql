-- Usher server schema, SQLite flavour. The PostgreSQL twin lives in ../server-postgres/ and must
-- stay column-for-column identical so one SQL text fits both backends (DESIGN §9):
--   * times are INTEGER unix milliseconds (ticket validity: unix seconds, as signed);
--   * ids are 16-byte BLOBs here and UUID there (sqlx's uuid feature encodes both);
--   * JSON is TEXT; booleans INTEGER here, BOOLEAN there; every integer is bound as i64.
-- Never edit this file once it has landed: add a new timestamped migration instead.

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,          -- stored trimmed and lower-case
    password_hash TEXT NOT NULL,                 -- argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('admin', 'staff', 'viewer')),
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE events (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    venue       TEXT,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('draft', 'live', 'closed', 'archived')),
    settings    TEXT NOT NULL,                   -- JSON object
    event_tag   INTEGER NOT NULL UNIQUE,          -- random u32, signed into every ticket
    ble_secret  BLOB NOT NULL,                  -- sealed (ChaCha20-Poly1305, master key)
    mesh_key    BLOB NOT NULL,                  -- sealed
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One ed25519 key per event at a time; retired keys still verify the tickets they signed.
CREATE TABLE signing_keys (
    event_id    BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    key_id      INTEGER NOT NULL,                 -- u32 in the ticket
    public_key  BLOB NOT NULL,
    secret_key  BLOB NOT NULL,                  -- sealed, AAD = event id || key_id
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER,
    PRIMARY KEY (event_id, key_id)
);

-- participants, tickets and changes take bulk imports (100,000 rows in seconds), so they carry
-- no foreign keys: PostgreSQL checks those with a trigger per row, which costs more than the
-- insert itself. Every row is scoped by event_id; deleting an event deletes them explicitly.
CREATE TABLE participants (
    id             BLOB NOT NULL,                -- UUIDv7: time-ordered, the paging cursor
    event_id       BLOB NOT NULL,
    external_id    TEXT,
    name           TEXT,                         -- NULL once erased
    email          TEXT,
    email_key      TEXT,                         -- trimmed lower-case e-mail, the upsert key
    phone          TEXT,
    organization   TEXT,
    attention      TEXT,
    ticket_type    TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}',   -- JSON object
    ticket_serial  INTEGER,                       -- the current ticket (valid or revoked)
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    erased_at      INTEGER,
    -- (event_id, id): every lookup names the event, and paging walks this index in id order.
    PRIMARY KEY (event_id, id)
);
CREATE UNIQUE INDEX participants_external_id ON participants (event_id, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX participants_email_key ON participants (event_id, email_key);

-- Serials are never reused; allocated outside the writing transaction (gaps are harmless).
CREATE TABLE serial_counters (
    event_id     BLOB PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    last_serial  INTEGER NOT NULL
);

CREATE TABLE tickets (
    event_id       BLOB NOT NULL,
    serial         INTEGER NOT NULL,
    participant_id BLOB NOT NULL,
    key_id         INTEGER NOT NULL,
    short_code     INTEGER NOT NULL,              -- the 55-bit value of the XXXX-XXXX-XXXX code
    scopes         INTEGER NOT NULL,
    valid_from     INTEGER NOT NULL,              -- unix seconds, as signed
    valid_until    INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
    issued_at      INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoke_reason  TEXT,
    PRIMARY KEY (event_id, serial),
    UNIQUE (event_id, short_code)
);

CREATE TABLE gates (
    id             BLOB PRIMARY KEY,
    event_id       BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    zone           TEXT,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out', 'both')),
    zone_mask      INTEGER NOT NULL DEFAULT 0,
    allow_reentry  INTEGER NOT NULL DEFAULT 0,
    beacon_config  TEXT,                         -- JSON object or NULL
    mesh_addr      TEXT,
    is_active      INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX gates_event ON gates (event_id, id);

-- One-time codes an organizer hands to a kiosk; exchanged at POST /sync/v1/enroll for a gate
-- credential. Only the SHA-256 of the normalised code is stored.
CREATE TABLE enrollment_codes (
    code_hash   BLOB PRIMARY KEY,
    event_id    BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    gate_id     BLOB NOT NULL REFERENCES gates (id) ON DELETE CASCADE,
    created_by  BLOB,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX enrollment_codes_gate ON enrollment_codes (gate_id);

-- Bearer credentials of enrolled gates (random 256 bits, stored as SHA-256).
CREATE TABLE gate_credentials (
    token_hash    BLOB PRIMARY KEY,
    gate_id       BLOB NOT NULL REFERENCES gates (id) ON DELETE CASCADE,
    event_id      BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    device_name   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX gate_credentials_gate ON gate_credentials (gate_id);

-- The grow-only check-in log pushed by gates (DESIGN §4/§5).
CREATE TABLE checkins (
    id                 BLOB PRIMARY KEY,
    event_id           BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    gate_id            BLOB NOT NULL REFERENCES gates (id) ON DELETE CASCADE,
    seq                INTEGER NOT NULL,
    ticket_serial      INTEGER,
    code               TEXT,
    method             TEXT NOT NULL,
    direction          TEXT NOT NULL,
    decision           TEXT NOT NULL,
    reason             TEXT,
    hlc                INTEGER NOT NULL,
    scanned_at         INTEGER NOT NULL,
    replica_cursor     INTEGER NOT NULL,
    operator_override  TEXT,
    undoes             BLOB,
    received_at        INTEGER NOT NULL,
    UNIQUE (gate_id, seq)
);
CREATE INDEX checkins_ticket ON checkins (event_id, ticket_serial, hlc);
CREATE INDEX checkins_event ON checkins (event_id, received_at);

-- Derived admission state per ticket: the fold of its check-ins (DESIGN §5).
CREATE TABLE presence (
    event_id           BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    serial             INTEGER NOT NULL,
    inside             INTEGER NOT NULL,
    canonical_checkin  BLOB,
    last_checkin       BLOB,
    last_gate          BLOB,
    hlc                INTEGER NOT NULL,
    entries            INTEGER NOT NULL DEFAULT 0,
    exits              INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, serial)
);

CREATE TABLE conflicts (
    id               BLOB PRIMARY KEY,
    event_id         BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    ticket_serial    INTEGER NOT NULL,
    trigger_checkin  BLOB NOT NULL,
    checkin_ids      TEXT NOT NULL,              -- JSON array of UUIDs
    gate_ids         TEXT NOT NULL,              -- JSON array of UUIDs
    detected_at      INTEGER NOT NULL,
    resolution       TEXT,
    resolved_by      BLOB,
    resolved_at      INTEGER,
    UNIQUE (event_id, kind, trigger_checkin)
);
CREATE INDEX conflicts_event ON conflicts (event_id, detected_at);

-- The replication change log gates pull (DESIGN §4): one latest row per entity, so a
-- bootstrap from cursor 0 stays compact while tombstones remain. `change_seq` comes from
-- change_counters, bumped as the last statement of the writing transaction: the row lock
-- serialises allocation, so per event sequence order = commit order and a reader polling
-- `change_seq > cursor` never skips a row that commits late.
CREATE TABLE changes (
    event_id    BLOB NOT NULL,                   -- no foreign key: see participants
    kind        TEXT NOT NULL,
    entity_key  TEXT NOT NULL,
    change_seq  INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,                   -- JSON of sync_protocol::wire::ChangeData's payload
    PRIMARY KEY (event_id, kind, entity_key)
);
CREATE INDEX changes_seq ON changes (event_id, change_seq);

CREATE TABLE change_counters (
    event_id  BLOB PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    last_seq  INTEGER NOT NULL
);

-- Who did what. No foreign keys: the trail outlives the rows it talks about.
CREATE TABLE audit_log (
    id        BLOB PRIMARY KEY,                  -- UUIDv7, time-ordered
    at        INTEGER NOT NULL,
    actor_id  BLOB,
    actor     TEXT NOT NULL,                     -- e-mail, or "system"
    action    TEXT NOT NULL,
    event_id  BLOB,
    target    TEXT,
    detail    TEXT NOT NULL                      -- JSON object
);
CREATE INDEX audit_log_event ON audit_log (event_id, id);
