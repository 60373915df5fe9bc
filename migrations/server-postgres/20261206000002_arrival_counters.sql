-- Maintained arrivals per minute (GET …/arrivals, the live dashboard's chart): effective
-- admitted entries (admitted, inward, not invalid, not a test, not an undo, not undone) per
-- event and minute of their scan time (`scanned_at / 60000`), the definition `gate_counters`
-- uses for entries. The chart reads at most a day of rows, never the event's check-ins.
CREATE TABLE arrival_counters (
    event_id UUID NOT NULL,
    minute   BIGINT NOT NULL,
    entries  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute)
);

-- Check-ins are only ever inserted (an undo is a new row naming the one it undoes) and deleted
-- with their event. Like `gate_counters_add`, the undo step starts from the statement's undo
-- rows and probes by primary key, and runs only when the statement undoes something.
CREATE FUNCTION arrival_counters_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO arrival_counters (event_id, minute, entries)
    SELECT n.event_id, n.scanned_at / 60000, count(*)
    FROM new_rows n
    WHERE n.invalid IS NULL AND NOT n.is_test AND n.decision = 'admit' AND n.direction = 'in'
      AND n.undoes IS NULL AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = n.id)
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (event_id, minute)
        DO UPDATE SET entries = arrival_counters.entries + excluded.entries;
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE undoes IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    -- Earlier entries this statement undoes for the first time stop counting.
    UPDATE arrival_counters a SET entries = a.entries - d.n
    FROM (
        SELECT c.event_id, c.scanned_at / 60000 AS minute, count(*) AS n
        FROM (SELECT DISTINCT u.undoes AS id FROM new_rows u WHERE u.undoes IS NOT NULL) t
        JOIN checkins c ON c.id = t.id
        WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = c.id)
          AND c.decision = 'admit' AND c.direction = 'in' AND c.invalid IS NULL
          AND NOT c.is_test AND c.undoes IS NULL
          AND NOT EXISTS (SELECT 1 FROM checkins o
                          WHERE o.undoes = c.id
                            AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id))
        GROUP BY 1, 2 ORDER BY 1, 2
    ) d
    WHERE a.event_id = d.event_id AND a.minute = d.minute;
    RETURN NULL;
END $$;

CREATE FUNCTION arrival_counters_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM arrival_counters WHERE event_id IN (SELECT DISTINCT event_id FROM old_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER checkins_arrival_insert AFTER INSERT ON checkins
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arrival_counters_add();
CREATE TRIGGER checkins_arrival_delete AFTER DELETE ON checkins
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION arrival_counters_remove();

-- What is already there.
INSERT INTO arrival_counters (event_id, minute, entries)
SELECT c.event_id, c.scanned_at / 60000, count(*)
FROM checkins c
WHERE c.invalid IS NULL AND NOT c.is_test AND c.decision = 'admit' AND c.direction = 'in'
  AND c.undoes IS NULL AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id)
GROUP BY 1, 2;
