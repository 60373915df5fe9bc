-- Maintained arrivals per minute (GET …/arrivals, the live dashboard's chart): effective
-- admitted entries (admitted, inward, not invalid, not a test, not an undo, not undone) per
-- event and minute of their scan time (`scanned_at / 60000`), the definition `gate_counters`
-- uses for entries. The chart reads at most a day of rows, never the event's check-ins.
CREATE TABLE arrival_counters (
    event_id BLOB NOT NULL,
    minute   INTEGER NOT NULL,
    entries  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute)
);

-- Check-ins are only ever inserted (an undo is a new row naming the one it undoes) and deleted
-- with their event.
CREATE TRIGGER checkins_arrival_insert AFTER INSERT ON checkins
WHEN NEW.invalid IS NULL AND NOT NEW.is_test AND NEW.decision = 'admit'
    AND NEW.direction = 'in' AND NEW.undoes IS NULL
    AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = NEW.id)
BEGIN
    INSERT INTO arrival_counters (event_id, minute, entries)
    VALUES (NEW.event_id, NEW.scanned_at / 60000, 1)
    ON CONFLICT (event_id, minute) DO UPDATE SET entries = entries + 1;
END;

-- An earlier entry undone for the first time stops counting.
CREATE TRIGGER checkins_arrival_undo AFTER INSERT ON checkins
WHEN NEW.undoes IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM checkins o WHERE o.undoes = NEW.undoes AND o.id IS NOT NEW.id)
BEGIN
    UPDATE arrival_counters SET entries = entries - 1
    WHERE (event_id, minute) = (
        SELECT c.event_id, c.scanned_at / 60000 FROM checkins c
        WHERE c.id = NEW.undoes AND c.direction = 'in' AND c.decision = 'admit'
          AND c.invalid IS NULL AND NOT c.is_test AND c.undoes IS NULL
    );
END;

CREATE TRIGGER checkins_arrival_delete AFTER DELETE ON checkins BEGIN
    DELETE FROM arrival_counters WHERE event_id = OLD.event_id;
END;

-- What is already there.
INSERT INTO arrival_counters (event_id, minute, entries)
SELECT c.event_id, c.scanned_at / 60000, count(*)
FROM checkins c
WHERE c.invalid IS NULL AND NOT c.is_test AND c.decision = 'admit' AND c.direction = 'in'
  AND c.undoes IS NULL AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id)
GROUP BY 1, 2;
