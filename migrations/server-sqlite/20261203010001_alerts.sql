-- Alerts: rules per event, and the transitions the evaluator of every server process decides.

-- An event's own rules (absent: the defaults). `rules` is the JSON document of
-- `GET …/alert-rules`, checked before it is stored.
CREATE TABLE alert_rules (
    event_id    BLOB PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    rules       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per time a rule fired for a subject (a gate id, or `event`): firing while
-- `cleared_at` is NULL. The partial unique index lets at most one firing row exist per
-- (event, kind, subject), so when several server processes see the same condition start, the
-- INSERT of exactly one succeeds; clearing is an UPDATE guarded by `cleared_at IS NULL`, which
-- again exactly one process wins.
CREATE TABLE alerts (
    id              BLOB PRIMARY KEY,            -- UUIDv7: time-ordered, the paging cursor
    event_id        BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    fired_at        INTEGER NOT NULL,
    cleared_at      INTEGER,
    detail          TEXT NOT NULL,               -- JSON object: what was seen when it fired
    cleared_detail  TEXT                         -- JSON object: what was seen when it cleared
);
CREATE UNIQUE INDEX alerts_firing ON alerts (event_id, kind, subject) WHERE cleared_at IS NULL;
CREATE INDEX alerts_event ON alerts (event_id, id);

-- Alert e-mails to the event's staff go through the ticket mail outbox: `kind` tells them
-- apart; for an alert message `participant_id` holds the recipient's user id, `ticket_serial`
-- is 0, and the message itself is stored (`recipient`, `subject`, `body`).
ALTER TABLE ticket_mails ADD COLUMN kind TEXT NOT NULL DEFAULT 'ticket';
ALTER TABLE ticket_mails ADD COLUMN recipient TEXT;
ALTER TABLE ticket_mails ADD COLUMN subject TEXT;
ALTER TABLE ticket_mails ADD COLUMN body TEXT;
