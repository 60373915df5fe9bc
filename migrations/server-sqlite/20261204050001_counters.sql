-- Maintained counters for the live dashboard and the report (GET …/attendance): the counts an
-- organizer watches are read from a few rows, not recounted from every participant, ticket and
-- check-in of the event. Row triggers keep them exact in the writing transaction, whatever
-- path writes.

-- Participants per ticket type ('' for none): the report's "registered".
CREATE TABLE type_counters (
    event_id    BLOB NOT NULL,
    ticket_type TEXT NOT NULL,
    registered  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, ticket_type)
);

-- Valid tickets per event.
CREATE TABLE ticket_counters (
    event_id      BLOB PRIMARY KEY,
    tickets_valid INTEGER NOT NULL DEFAULT 0
);

-- Effective admitted entries and exits (not invalid, not a test, not an undo, not undone) and
-- rejections per gate.
CREATE TABLE gate_counters (
    gate_id  BLOB PRIMARY KEY,
    entries  INTEGER NOT NULL DEFAULT 0,
    exits    INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0
);

-- "Is this check-in undone?" is a probe, not a scan of the event's check-ins.
CREATE INDEX checkins_undoes ON checkins (undoes) WHERE undoes IS NOT NULL;
-- Presence joins its participant by the current ticket.
CREATE INDEX participants_ticket ON participants (event_id, ticket_serial)
    WHERE ticket_serial IS NOT NULL;

-- ------------------------------------------------------------------ participants per type

CREATE TRIGGER participants_count_insert AFTER INSERT ON participants BEGIN
    INSERT INTO type_counters (event_id, ticket_type, registered)
    VALUES (NEW.event_id, COALESCE(NEW.ticket_type, ''), 1)
    ON CONFLICT (event_id, ticket_type) DO UPDATE SET registered = registered + 1;
END;

CREATE TRIGGER participants_count_update AFTER UPDATE OF event_id, ticket_type ON participants
WHEN OLD.event_id IS NOT NEW.event_id OR OLD.ticket_type IS NOT NEW.ticket_type BEGIN
    UPDATE type_counters SET registered = registered - 1
    WHERE event_id = OLD.event_id AND ticket_type = COALESCE(OLD.ticket_type, '');
    INSERT INTO type_counters (event_id, ticket_type, registered)
    VALUES (NEW.event_id, COALESCE(NEW.ticket_type, ''), 1)
    ON CONFLICT (event_id, ticket_type) DO UPDATE SET registered = registered + 1;
END;

CREATE TRIGGER participants_count_delete AFTER DELETE ON participants BEGIN
    UPDATE type_counters SET registered = registered - 1
    WHERE event_id = OLD.event_id AND ticket_type = COALESCE(OLD.ticket_type, '');
END;

-- ------------------------------------------------------------------ valid tickets

CREATE TRIGGER tickets_count_insert AFTER INSERT ON tickets WHEN NEW.status = 'valid' BEGIN
    INSERT INTO ticket_counters (event_id, tickets_valid) VALUES (NEW.event_id, 1)
    ON CONFLICT (event_id) DO UPDATE SET tickets_valid = tickets_valid + 1;
END;

CREATE TRIGGER tickets_count_update AFTER UPDATE OF event_id, status ON tickets
WHEN (OLD.status = 'valid') IS NOT (NEW.status = 'valid') OR OLD.event_id IS NOT NEW.event_id
BEGIN
    UPDATE ticket_counters SET tickets_valid = tickets_valid - 1
    WHERE event_id = OLD.event_id AND OLD.status = 'valid';
    INSERT INTO ticket_counters (event_id, tickets_valid)
    SELECT NEW.event_id, 1 WHERE NEW.status = 'valid'
    ON CONFLICT (event_id) DO UPDATE SET tickets_valid = tickets_valid + 1;
END;

CREATE TRIGGER tickets_count_delete AFTER DELETE ON tickets WHEN OLD.status = 'valid' BEGIN
    UPDATE ticket_counters SET tickets_valid = tickets_valid - 1 WHERE event_id = OLD.event_id;
END;

-- ------------------------------------------------------------------ check-ins per gate

-- Check-ins are only ever inserted (an undo is a new row naming the one it undoes) and deleted
-- with their event.
CREATE TRIGGER checkins_count_insert AFTER INSERT ON checkins
WHEN NEW.invalid IS NULL AND NOT NEW.is_test BEGIN
    INSERT INTO gate_counters (gate_id, entries, exits, rejected)
    VALUES (
        NEW.gate_id,
        CASE WHEN NEW.decision = 'admit' AND NEW.direction = 'in' AND NEW.undoes IS NULL
            AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = NEW.id) THEN 1 ELSE 0 END,
        CASE WHEN NEW.decision = 'admit' AND NEW.direction = 'out' AND NEW.undoes IS NULL
            AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = NEW.id) THEN 1 ELSE 0 END,
        CASE WHEN NEW.decision = 'reject' THEN 1 ELSE 0 END
    )
    ON CONFLICT (gate_id) DO UPDATE SET
        entries = entries + excluded.entries,
        exits = exits + excluded.exits,
        rejected = rejected + excluded.rejected;
END;

-- An earlier check-in undone for the first time stops counting.
CREATE TRIGGER checkins_count_undo AFTER INSERT ON checkins
WHEN NEW.undoes IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM checkins o WHERE o.undoes = NEW.undoes AND o.id IS NOT NEW.id)
BEGIN
    UPDATE gate_counters SET
        entries = entries - (SELECT count(*) FROM checkins c WHERE c.id = NEW.undoes
            AND c.direction = 'in' AND c.decision = 'admit' AND c.invalid IS NULL
            AND NOT c.is_test AND c.undoes IS NULL),
        exits = exits - (SELECT count(*) FROM checkins c WHERE c.id = NEW.undoes
            AND c.direction = 'out' AND c.decision = 'admit' AND c.invalid IS NULL
            AND NOT c.is_test AND c.undoes IS NULL)
    WHERE gate_id = (SELECT gate_id FROM checkins WHERE id = NEW.undoes);
END;

CREATE TRIGGER checkins_count_delete AFTER DELETE ON checkins BEGIN
    DELETE FROM gate_counters WHERE gate_id = OLD.gate_id;
END;

-- ------------------------------------------------------------------ what is already there

INSERT INTO type_counters (event_id, ticket_type, registered)
SELECT event_id, COALESCE(ticket_type, ''), count(*) FROM participants GROUP BY 1, 2;

INSERT INTO ticket_counters (event_id, tickets_valid)
SELECT event_id, count(*) FROM tickets WHERE status = 'valid' GROUP BY 1;

INSERT INTO gate_counters (gate_id, entries, exits, rejected)
SELECT c.gate_id,
    sum(CASE WHEN c.decision = 'admit' AND c.direction = 'in' AND c.undoes IS NULL
        AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id) THEN 1 ELSE 0 END),
    sum(CASE WHEN c.decision = 'admit' AND c.direction = 'out' AND c.undoes IS NULL
        AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id) THEN 1 ELSE 0 END),
    sum(CASE WHEN c.decision = 'reject' THEN 1 ELSE 0 END)
FROM checkins c WHERE c.invalid IS NULL AND NOT c.is_test
GROUP BY c.gate_id;
