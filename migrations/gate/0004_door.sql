-- Door operations: the badge print log. A print is its own event, never an admission: it
-- writes no outbox row. `reprint` prints needed the supervisor PIN; `approved_by` says who.
CREATE TABLE prints (
    id            INTEGER PRIMARY KEY,
    serial        INTEGER NOT NULL,
    printed_at_ms INTEGER NOT NULL,
    reprint       INTEGER NOT NULL,
    approved_by   TEXT,
    printer       TEXT NOT NULL
) STRICT;
CREATE INDEX prints_serial ON prints (serial);
