-- Ticket e-mail (issue 12): the durable outbox of ticket messages and the organizer's templates.

-- One row per message, written in the unit of work that asks for it (`POST …/tickets/send`).
-- The worker of any server process claims due rows with a lease (`locked_until`), as the webhook
-- outbox does, so several processes on one database send each message once.
CREATE TABLE ticket_mails (
    id               UUID PRIMARY KEY,            -- UUIDv7; also the Message-ID's local part
    event_id         UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    participant_id   UUID NOT NULL,
    ticket_serial    BIGINT NOT NULL,             -- the ticket the message carries
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT,
    -- The mail server's answer to the last failed attempt (or why it could not be attempted).
    last_error       TEXT,
    -- `smtp` or `file` (an .eml file in the data directory, when no SMTP server is configured).
    transport        TEXT,
    created_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX ticket_mails_due ON ticket_mails (next_attempt_at) WHERE status = 'queued';
CREATE INDEX ticket_mails_participant ON ticket_mails (event_id, participant_id, id);
CREATE INDEX ticket_mails_sent ON ticket_mails (sent_at) WHERE sent_at IS NOT NULL;

-- The organizer's templates of an event (absent: the built-in ones).
CREATE TABLE mail_templates (
    event_id    UUID PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
