-- Maintained counters for the live dashboard and the report (GET …/attendance): the counts an
-- organizer watches are read from a few rows, not recounted from every participant, ticket and
-- check-in of the event. Statement-level triggers keep them exact in the writing transaction
-- (one upsert per statement and counter row, ordered by key so concurrent writers lock counter
-- rows in the same order), whatever path writes (COPY included).

-- Participants per ticket type ('' for none): the report's "registered".
CREATE TABLE type_counters (
    event_id    UUID NOT NULL,
    ticket_type TEXT NOT NULL,
    registered  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, ticket_type)
);

-- Valid tickets per event.
CREATE TABLE ticket_counters (
    event_id      UUID PRIMARY KEY,
    tickets_valid BIGINT NOT NULL DEFAULT 0
);

-- Effective admitted entries and exits (not invalid, not a test, not an undo, not undone) and
-- rejections per gate.
CREATE TABLE gate_counters (
    gate_id  UUID PRIMARY KEY,
    entries  BIGINT NOT NULL DEFAULT 0,
    exits    BIGINT NOT NULL DEFAULT 0,
    rejected BIGINT NOT NULL DEFAULT 0
);

-- "Is this check-in undone?" is a probe, not a scan of the event's check-ins.
CREATE INDEX checkins_undoes ON checkins (undoes) WHERE undoes IS NOT NULL;
-- Presence joins its participant by the current ticket.
CREATE INDEX participants_ticket ON participants (event_id, ticket_serial)
    WHERE ticket_serial IS NOT NULL;

-- ------------------------------------------------------------------ participants per type

CREATE FUNCTION type_counters_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO type_counters (event_id, ticket_type, registered)
    SELECT event_id, COALESCE(ticket_type, ''), count(*) FROM new_rows
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (event_id, ticket_type)
        DO UPDATE SET registered = type_counters.registered + excluded.registered;
    RETURN NULL;
END $$;

CREATE FUNCTION type_counters_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO type_counters (event_id, ticket_type, registered)
    SELECT event_id, t, sum(d) FROM (
        SELECT event_id, COALESCE(ticket_type, '') AS t, -1 AS d FROM old_rows
        UNION ALL
        SELECT event_id, COALESCE(ticket_type, ''), 1 FROM new_rows
    ) x
    GROUP BY 1, 2 HAVING sum(d) <> 0 ORDER BY 1, 2
    ON CONFLICT (event_id, ticket_type)
        DO UPDATE SET registered = type_counters.registered + excluded.registered;
    RETURN NULL;
END $$;

CREATE FUNCTION type_counters_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE type_counters c SET registered = c.registered - d.n
    FROM (SELECT event_id, COALESCE(ticket_type, '') AS t, count(*) AS n FROM old_rows
          GROUP BY 1, 2 ORDER BY 1, 2) d
    WHERE c.event_id = d.event_id AND c.ticket_type = d.t;
    RETURN NULL;
END $$;

CREATE TRIGGER participants_count_insert AFTER INSERT ON participants
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION type_counters_add();
CREATE TRIGGER participants_count_update AFTER UPDATE ON participants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION type_counters_move();
CREATE TRIGGER participants_count_delete AFTER DELETE ON participants
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION type_counters_remove();

-- ------------------------------------------------------------------ valid tickets

CREATE FUNCTION ticket_counters_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_counters (event_id, tickets_valid)
    SELECT event_id, count(*) FROM new_rows WHERE status = 'valid'
    GROUP BY 1 ORDER BY 1
    ON CONFLICT (event_id)
        DO UPDATE SET tickets_valid = ticket_counters.tickets_valid + excluded.tickets_valid;
    RETURN NULL;
END $$;

CREATE FUNCTION ticket_counters_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_counters (event_id, tickets_valid)
    SELECT event_id, sum(d) FROM (
        SELECT event_id, -1 AS d FROM old_rows WHERE status = 'valid'
        UNION ALL
        SELECT event_id, 1 FROM new_rows WHERE status = 'valid'
    ) x
    GROUP BY 1 HAVING sum(d) <> 0 ORDER BY 1
    ON CONFLICT (event_id)
        DO UPDATE SET tickets_valid = ticket_counters.tickets_valid + excluded.tickets_valid;
    RETURN NULL;
END $$;

CREATE FUNCTION ticket_counters_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ticket_counters c SET tickets_valid = c.tickets_valid - d.n
    FROM (SELECT event_id, count(*) AS n FROM old_rows WHERE status = 'valid'
          GROUP BY 1 ORDER BY 1) d
    WHERE c.event_id = d.event_id;
    RETURN NULL;
END $$;

CREATE TRIGGER tickets_count_insert AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ticket_counters_add();
CREATE TRIGGER tickets_count_update AFTER UPDATE ON tickets
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ticket_counters_move();
CREATE TRIGGER tickets_count_delete AFTER DELETE ON tickets
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ticket_counters_remove();

-- ------------------------------------------------------------------ check-ins per gate

-- Check-ins are only ever inserted (an undo is a new row naming the one it undoes) and deleted
-- with their event.
CREATE FUNCTION gate_counters_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gate_counters (gate_id, entries, exits, rejected)
    SELECT n.gate_id,
        count(*) FILTER (WHERE n.decision = 'admit' AND n.direction = 'in' AND n.undoes IS NULL
            AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = n.id)),
        count(*) FILTER (WHERE n.decision = 'admit' AND n.direction = 'out' AND n.undoes IS NULL
            AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = n.id)),
        count(*) FILTER (WHERE n.decision = 'reject')
    FROM new_rows n
    WHERE n.invalid IS NULL AND NOT n.is_test
    GROUP BY n.gate_id ORDER BY n.gate_id
    ON CONFLICT (gate_id) DO UPDATE SET
        entries = gate_counters.entries + excluded.entries,
        exits = gate_counters.exits + excluded.exits,
        rejected = gate_counters.rejected + excluded.rejected;
    -- Earlier check-ins this statement undoes for the first time stop counting.
    UPDATE gate_counters g SET entries = g.entries - d.ins, exits = g.exits - d.outs
    FROM (
        SELECT c.gate_id,
            count(*) FILTER (WHERE c.direction = 'in') AS ins,
            count(*) FILTER (WHERE c.direction = 'out') AS outs
        FROM checkins c
        WHERE c.id IN (SELECT u.undoes FROM new_rows u WHERE u.undoes IS NOT NULL)
          AND c.id NOT IN (SELECT id FROM new_rows)
          AND c.decision = 'admit' AND c.invalid IS NULL AND NOT c.is_test AND c.undoes IS NULL
          AND NOT EXISTS (SELECT 1 FROM checkins o
                          WHERE o.undoes = c.id AND o.id NOT IN (SELECT id FROM new_rows))
        GROUP BY c.gate_id ORDER BY c.gate_id
    ) d
    WHERE g.gate_id = d.gate_id;
    RETURN NULL;
END $$;

CREATE FUNCTION gate_counters_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM gate_counters WHERE gate_id IN (SELECT DISTINCT gate_id FROM old_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER checkins_count_insert AFTER INSERT ON checkins
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gate_counters_add();
CREATE TRIGGER checkins_count_delete AFTER DELETE ON checkins
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION gate_counters_remove();

-- ------------------------------------------------------------------ what is already there

INSERT INTO type_counters (event_id, ticket_type, registered)
SELECT event_id, COALESCE(ticket_type, ''), count(*) FROM participants GROUP BY 1, 2;

INSERT INTO ticket_counters (event_id, tickets_valid)
SELECT event_id, count(*) FROM tickets WHERE status = 'valid' GROUP BY 1;

INSERT INTO gate_counters (gate_id, entries, exits, rejected)
SELECT c.gate_id,
    count(*) FILTER (WHERE c.decision = 'admit' AND c.direction = 'in' AND c.undoes IS NULL
        AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id)),
    count(*) FILTER (WHERE c.decision = 'admit' AND c.direction = 'out' AND c.undoes IS NULL
        AND NOT EXISTS (SELECT 1 FROM checkins u WHERE u.undoes = c.id)),
    count(*) FILTER (WHERE c.decision = 'reject')
FROM checkins c WHERE c.invalid IS NULL AND NOT c.is_test
GROUP BY c.gate_id;
