-- Maintained presence counters: "inside", "admitted" and their splits per gate and per ticket
-- type (GET …/attendance, the live dashboard, the occupancy gauge) are read from a few rows,
-- not aggregated over the event's presence rows on every request. Row triggers keep them
-- exact in the writing transaction, whatever path writes.
--
-- Each presence row counts once in each table, under the minute of its last movement's clock
-- (`(hlc >> 16) / 60000`: the clock's wall milliseconds, in whole minutes). The daily automatic
-- check-out is a rule on the clock, not a write: whoever moved in before the last check-out
-- instant is not inside any more. Check-out instants are whole minutes, so "inside now" is the
-- sum over the minutes at or after it, exactly.
--
-- `admitted` counts tickets with at least one effective entry; `inside` those whose last
-- movement is an entry. A row with neither counts nowhere.

-- Per gate of the last movement (the nil UUID for none).
CREATE TABLE gate_presence (
    event_id BLOB NOT NULL,
    minute   INTEGER NOT NULL,
    gate_id  BLOB NOT NULL,
    inside   INTEGER NOT NULL DEFAULT 0,
    admitted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute, gate_id)
);

-- Per ticket type ('' for none) of the participant whose current ticket the row is about;
-- tickets no participant holds any more (reissued) count in `gate_presence` only.
CREATE TABLE type_presence (
    event_id    BLOB NOT NULL,
    minute      INTEGER NOT NULL,
    ticket_type TEXT NOT NULL,
    inside      INTEGER NOT NULL DEFAULT 0,
    admitted    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute, ticket_type)
);

-- ------------------------------------------------------------------ one place for the upserts

-- The triggers below write signed contributions into these views; their INSTEAD OF triggers
-- fold them into the counters (SQLite has no functions to share the upserts otherwise).
-- `serial` names the ticket whose current holder's type also counts; NULL for none.
CREATE VIEW presence_delta (event_id, minute, gate_id, serial, inside, admitted) AS
    SELECT NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
CREATE VIEW type_presence_delta (event_id, minute, ticket_type, inside, admitted) AS
    SELECT NULL, NULL, NULL, NULL, NULL WHERE 0;

CREATE TRIGGER type_presence_apply INSTEAD OF INSERT ON type_presence_delta BEGIN
    INSERT INTO type_presence (event_id, minute, ticket_type, inside, admitted)
    VALUES (NEW.event_id, NEW.minute, NEW.ticket_type, NEW.inside, NEW.admitted)
    ON CONFLICT (event_id, minute, ticket_type) DO UPDATE SET
        inside = inside + excluded.inside, admitted = admitted + excluded.admitted;
END;

CREATE TRIGGER presence_apply INSTEAD OF INSERT ON presence_delta BEGIN
    INSERT INTO gate_presence (event_id, minute, gate_id, inside, admitted)
    VALUES (NEW.event_id, NEW.minute, NEW.gate_id, NEW.inside, NEW.admitted)
    ON CONFLICT (event_id, minute, gate_id) DO UPDATE SET
        inside = inside + excluded.inside, admitted = admitted + excluded.admitted;
    INSERT INTO type_presence_delta (event_id, minute, ticket_type, inside, admitted)
    SELECT NEW.event_id, NEW.minute, COALESCE(p.ticket_type, ''), NEW.inside, NEW.admitted
    FROM participants p WHERE p.event_id = NEW.event_id AND p.ticket_serial = NEW.serial;
END;

-- ------------------------------------------------------------------ presence writes

CREATE TRIGGER presence_count_insert AFTER INSERT ON presence
WHEN NEW.inside OR NEW.entries > 0 BEGIN
    INSERT INTO presence_delta (event_id, minute, gate_id, serial, inside, admitted)
    SELECT NEW.event_id, (NEW.hlc >> 16) / 60000, COALESCE(NEW.last_gate, X'00000000000000000000000000000000'),
           NEW.serial, NEW.inside, (NEW.entries > 0)
    WHERE NEW.inside OR NEW.entries > 0;
END;

CREATE TRIGGER presence_count_update AFTER UPDATE ON presence
WHEN OLD.inside IS NOT NEW.inside OR OLD.hlc IS NOT NEW.hlc OR OLD.last_gate IS NOT NEW.last_gate
    OR (OLD.entries > 0) IS NOT (NEW.entries > 0) OR OLD.event_id IS NOT NEW.event_id
    OR OLD.serial IS NOT NEW.serial
BEGIN
    INSERT INTO presence_delta (event_id, minute, gate_id, serial, inside, admitted)
    SELECT OLD.event_id, (OLD.hlc >> 16) / 60000, COALESCE(OLD.last_gate, X'00000000000000000000000000000000'),
           OLD.serial, -OLD.inside, -(OLD.entries > 0)
    WHERE OLD.inside OR OLD.entries > 0;
    INSERT INTO presence_delta (event_id, minute, gate_id, serial, inside, admitted)
    SELECT NEW.event_id, (NEW.hlc >> 16) / 60000, COALESCE(NEW.last_gate, X'00000000000000000000000000000000'),
           NEW.serial, NEW.inside, (NEW.entries > 0)
    WHERE NEW.inside OR NEW.entries > 0;
END;

CREATE TRIGGER presence_count_delete AFTER DELETE ON presence
WHEN OLD.inside OR OLD.entries > 0 BEGIN
    INSERT INTO presence_delta (event_id, minute, gate_id, serial, inside, admitted)
    SELECT OLD.event_id, (OLD.hlc >> 16) / 60000, COALESCE(OLD.last_gate, X'00000000000000000000000000000000'),
           OLD.serial, -OLD.inside, -(OLD.entries > 0)
    WHERE OLD.inside OR OLD.entries > 0;
END;

-- ------------------------------------------------------------------ participant writes

-- A participant who gets another ticket (a reissue), another type, or is added or deleted
-- moves the presence of their ticket between types.
CREATE TRIGGER participants_presence_insert AFTER INSERT ON participants
WHEN NEW.ticket_serial IS NOT NULL BEGIN
    INSERT INTO type_presence_delta (event_id, minute, ticket_type, inside, admitted)
    SELECT pr.event_id, (pr.hlc >> 16) / 60000, COALESCE(NEW.ticket_type, ''),
           pr.inside, (pr.entries > 0)
    FROM presence pr
    WHERE pr.event_id = NEW.event_id AND pr.serial = NEW.ticket_serial
      AND (pr.inside OR pr.entries > 0);
END;

CREATE TRIGGER participants_presence_update AFTER UPDATE OF event_id, ticket_serial, ticket_type
ON participants
WHEN OLD.event_id IS NOT NEW.event_id OR OLD.ticket_serial IS NOT NEW.ticket_serial
    OR OLD.ticket_type IS NOT NEW.ticket_type
BEGIN
    INSERT INTO type_presence_delta (event_id, minute, ticket_type, inside, admitted)
    SELECT pr.event_id, (pr.hlc >> 16) / 60000, COALESCE(OLD.ticket_type, ''),
           -pr.inside, -(pr.entries > 0)
    FROM presence pr
    WHERE pr.event_id = OLD.event_id AND pr.serial = OLD.ticket_serial
      AND (pr.inside OR pr.entries > 0);
    INSERT INTO type_presence_delta (event_id, minute, ticket_type, inside, admitted)
    SELECT pr.event_id, (pr.hlc >> 16) / 60000, COALESCE(NEW.ticket_type, ''),
           pr.inside, (pr.entries > 0)
    FROM presence pr
    WHERE pr.event_id = NEW.event_id AND pr.serial = NEW.ticket_serial
      AND (pr.inside OR pr.entries > 0);
END;

CREATE TRIGGER participants_presence_delete AFTER DELETE ON participants
WHEN OLD.ticket_serial IS NOT NULL BEGIN
    INSERT INTO type_presence_delta (event_id, minute, ticket_type, inside, admitted)
    SELECT pr.event_id, (pr.hlc >> 16) / 60000, COALESCE(OLD.ticket_type, ''),
           -pr.inside, -(pr.entries > 0)
    FROM presence pr
    WHERE pr.event_id = OLD.event_id AND pr.serial = OLD.ticket_serial
      AND (pr.inside OR pr.entries > 0);
END;

-- ------------------------------------------------------------------ what is already there

INSERT INTO gate_presence (event_id, minute, gate_id, inside, admitted)
SELECT event_id, (hlc >> 16) / 60000, COALESCE(last_gate, X'00000000000000000000000000000000'),
       sum(inside), sum(entries > 0)
FROM presence WHERE inside OR entries > 0 GROUP BY 1, 2, 3;

INSERT INTO type_presence (event_id, minute, ticket_type, inside, admitted)
SELECT pr.event_id, (pr.hlc >> 16) / 60000, COALESCE(p.ticket_type, ''),
       sum(pr.inside), sum(pr.entries > 0)
FROM presence pr JOIN participants p ON p.event_id = pr.event_id AND p.ticket_serial = pr.serial
WHERE pr.inside OR pr.entries > 0 GROUP BY 1, 2, 3;
