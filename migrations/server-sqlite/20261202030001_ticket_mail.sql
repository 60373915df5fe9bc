-- Ticket e-mail (issue 12): the durable outbox of ticket messages and the organizer's templates.

-- One row per message, written in the unit of work that asks for it (`POST …/tickets/send`).
-- The worker of any server process claims due rows with a lease (`locked_until`), as the webhook
-- outbox does, so several processes on one database send each message once.
CREATE TABLE ticket_mails (
    id               BLOB PRIMARY KEY,            -- UUIDv7; also the Message-ID's local part
    event_id         BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    participant_id   BLOB NOT NULL,
    ticket_serial    INTEGER NOT NULL,             -- the ticket the message carries
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    locked_until     INTEGER,
    -- The mail server's answer to the last failed attempt (or why it could not be attempted).
    last_error       TEXT,
    -- `smtp` or `file` (an .eml file in the data directory, when no SMTP server is configured).
    transport        TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX ticket_mails_due ON ticket_mails (next_attempt_at) WHERE status = 'queued';
CREATE INDEX ticket_mails_participant ON ticket_mails (event_id, participant_id, id);
CREATE INDEX ticket_mails_sent ON ticket_mails (sent_at) WHERE sent_at IS NOT NULL;

-- The organizer's templates of an event (absent: the built-in ones).
CREATE TABLE mail_templates (
    event_id    BLOB PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
