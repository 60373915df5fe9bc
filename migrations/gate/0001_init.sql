-- Gate replica schema, version 1. Never edit once released: add a new numbered file.

-- Enrollment, cursors and clocks: one row per key. The clock of local decisions lives in the
-- outbox rows themselves (the newest row's hlc), so a decision writes no meta row.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Tickets of this gate's event, as replicated from the server.
CREATE TABLE tickets (
    serial       INTEGER PRIMARY KEY,
    display_name TEXT,
    status       TEXT NOT NULL DEFAULT 'valid',
    scopes       INTEGER NOT NULL DEFAULT 0,
    short_code   TEXT,
    ble_key      BLOB,
    attention    TEXT,
    valid_from   INTEGER NOT NULL DEFAULT 0,
    valid_until  INTEGER NOT NULL DEFAULT 0,
    change_seq   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX tickets_short_code ON tickets (short_code) WHERE short_code IS NOT NULL;
CREATE INDEX tickets_name ON tickets (display_name COLLATE NOCASE) WHERE display_name IS NOT NULL;

-- Revocations with the change that carried them (tells late from known revocations).
CREATE TABLE revocations (
    serial     INTEGER PRIMARY KEY,
    change_seq INTEGER NOT NULL,
    hlc        INTEGER NOT NULL DEFAULT 0,
    reason     TEXT
) STRICT;

CREATE TABLE signing_keys (
    key_id     INTEGER PRIMARY KEY,
    public_key BLOB NOT NULL,
    retired    INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Gate configurations of the event: this gate's own and its peers'.
CREATE TABLE gates (
    gate_id TEXT PRIMARY KEY,
    config  TEXT NOT NULL
) STRICT;

-- Who is inside, as far as this gate knows: the server's derived presence, this gate's own
-- scans and its mesh peers' scans, latest clock wins.
CREATE TABLE presence (
    serial     INTEGER PRIMARY KEY,
    inside     INTEGER NOT NULL,
    entries    INTEGER NOT NULL DEFAULT 0,
    gate_id    TEXT,
    checkin_id TEXT,
    hlc        INTEGER NOT NULL DEFAULT 0
) STRICT;

-- The gate's append-only scan log. A row is written in the same transaction as the decision,
-- before the result is shown. A decision commit must touch as few pages as possible (each page
-- is WAL-written and fsynced before the verdict shows), so the log has no secondary indexes:
-- rows are appended in seq order, `id` is a fresh UUIDv7 (unique by construction) that only
-- rare operations (undo) look up, and what is pending is `seq > meta.acked_seq`.
CREATE TABLE outbox (
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL,
    ticket_serial     INTEGER,
    code              TEXT,
    method            TEXT NOT NULL,
    direction         TEXT NOT NULL,
    decision          TEXT NOT NULL,
    reason            TEXT,
    hlc               INTEGER NOT NULL,
    scanned_at_ms     INTEGER NOT NULL,
    replica_cursor    INTEGER NOT NULL,
    operator_override TEXT,
    undoes            TEXT,
    synced            INTEGER NOT NULL DEFAULT 0,
    server_status     TEXT
) STRICT;
