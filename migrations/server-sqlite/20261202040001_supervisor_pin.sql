-- The supervisor PIN of an event (overrides and badge reprints at the gates): only its argon2id
-- PHC string is stored, and replicated to the gates in their configuration.
CREATE TABLE event_supervisor_pins (
    event_id  BLOB PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    pin_hash  TEXT NOT NULL,
    set_at    INTEGER NOT NULL,
    set_by    TEXT NOT NULL
);
