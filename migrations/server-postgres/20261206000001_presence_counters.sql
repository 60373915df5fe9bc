-- Maintained presence counters: "inside", "admitted" and their splits per gate and per ticket
-- type (GET …/attendance, the live dashboard, the occupancy gauge) are read from a few rows,
-- not aggregated over the event's presence rows on every request (490 ms after 100,000
-- check-ins).
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
    event_id UUID NOT NULL,
    minute   BIGINT NOT NULL,
    gate_id  UUID NOT NULL,
    inside   BIGINT NOT NULL DEFAULT 0,
    admitted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute, gate_id)
);

-- Per ticket type ('' for none) of the participant whose current ticket the row is about;
-- tickets no participant holds any more (reissued) count in `gate_presence` only.
CREATE TABLE type_presence (
    event_id    UUID NOT NULL,
    minute      BIGINT NOT NULL,
    ticket_type TEXT NOT NULL,
    inside      BIGINT NOT NULL DEFAULT 0,
    admitted    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute, ticket_type)
);

-- One statement's changes, as signed contributions.
CREATE TYPE gate_presence_delta AS (
    event_id UUID, minute BIGINT, gate_id UUID, serial BIGINT, inside BIGINT, admitted BIGINT
);
CREATE TYPE type_presence_delta AS (
    event_id UUID, minute BIGINT, ticket_type TEXT, inside BIGINT, admitted BIGINT
);

-- Folds contributions into the counters: one upsert per key, ordered by key so that
-- concurrent writers lock counter rows in the same order.
CREATE FUNCTION type_presence_apply(d type_presence_delta[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO type_presence (event_id, minute, ticket_type, inside, admitted)
    SELECT x.event_id, x.minute, x.ticket_type, sum(x.inside), sum(x.admitted)
    FROM unnest(d) x
    GROUP BY 1, 2, 3 HAVING sum(x.inside) <> 0 OR sum(x.admitted) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (event_id, minute, ticket_type) DO UPDATE SET
        inside = type_presence.inside + excluded.inside,
        admitted = type_presence.admitted + excluded.admitted;
$$;

-- Gate contributions, and through each row's current participant (an index probe per row)
-- the type contributions.
CREATE FUNCTION gate_presence_apply(d gate_presence_delta[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO gate_presence (event_id, minute, gate_id, inside, admitted)
    SELECT x.event_id, x.minute, x.gate_id, sum(x.inside), sum(x.admitted)
    FROM unnest(d) x
    GROUP BY 1, 2, 3 HAVING sum(x.inside) <> 0 OR sum(x.admitted) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (event_id, minute, gate_id) DO UPDATE SET
        inside = gate_presence.inside + excluded.inside,
        admitted = gate_presence.admitted + excluded.admitted;
    SELECT type_presence_apply(array_agg(
        ROW(x.event_id, x.minute, COALESCE(p.ticket_type, ''), x.inside, x.admitted)::type_presence_delta))
    FROM unnest(d) x
    JOIN participants p ON p.event_id = x.event_id AND p.ticket_serial = x.serial;
$$;

-- ------------------------------------------------------------------ presence writes

-- `sign` is -1 for a row's old version and 1 for its new one.
CREATE FUNCTION gate_presence_of(
    event_id UUID, serial BIGINT, hlc BIGINT, last_gate UUID, inside BOOLEAN, entries BIGINT,
    sign BIGINT
) RETURNS gate_presence_delta LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(event_id, (hlc >> 16) / 60000,
               COALESCE(last_gate, '00000000-0000-0000-0000-000000000000'::uuid), serial,
               sign * inside::int, sign * (entries > 0)::int)::gate_presence_delta
$$;

CREATE FUNCTION presence_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d gate_presence_delta[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(gate_presence_of(n.event_id, n.serial, n.hlc, n.last_gate,
                                n.inside, n.entries, 1)) INTO d
        FROM new_rows n WHERE n.inside OR n.entries > 0;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(gate_presence_of(o.event_id, o.serial, o.hlc, o.last_gate,
                                o.inside, o.entries, -1)) INTO d
        FROM old_rows o WHERE o.inside OR o.entries > 0;
    ELSE
        SELECT array_agg(x) INTO d FROM (
            SELECT gate_presence_of(o.event_id, o.serial, o.hlc, o.last_gate,
                                o.inside, o.entries, -1) AS x FROM old_rows o WHERE o.inside OR o.entries > 0
            UNION ALL
            SELECT gate_presence_of(n.event_id, n.serial, n.hlc, n.last_gate,
                                n.inside, n.entries, 1) FROM new_rows n WHERE n.inside OR n.entries > 0
        ) c;
    END IF;
    IF d IS NOT NULL THEN
        PERFORM gate_presence_apply(d);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER presence_count_insert AFTER INSERT ON presence
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION presence_counters();
CREATE TRIGGER presence_count_update AFTER UPDATE ON presence
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION presence_counters();
CREATE TRIGGER presence_count_delete AFTER DELETE ON presence
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION presence_counters();

-- ------------------------------------------------------------------ participant writes

-- A participant who gets another ticket (a reissue), another type, or is added or deleted
-- moves the presence of their tickets between types. Only rows whose ticket, type or event
-- changed count; each probes presence by its primary key.
CREATE FUNCTION participant_presence_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d type_presence_delta[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(ROW(n.event_id, (pr.hlc >> 16) / 60000, COALESCE(n.ticket_type, ''),
                             pr.inside::int, (pr.entries > 0)::int)::type_presence_delta) INTO d
        FROM new_rows n JOIN presence pr ON pr.event_id = n.event_id AND pr.serial = n.ticket_serial
        WHERE pr.inside OR pr.entries > 0;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(ROW(o.event_id, (pr.hlc >> 16) / 60000, COALESCE(o.ticket_type, ''),
                             -pr.inside::int, -(pr.entries > 0)::int)::type_presence_delta) INTO d
        FROM old_rows o JOIN presence pr ON pr.event_id = o.event_id AND pr.serial = o.ticket_serial
        WHERE pr.inside OR pr.entries > 0;
    ELSE
        WITH moved AS (
            SELECT o.event_id AS old_event, o.ticket_serial AS old_serial,
                   COALESCE(o.ticket_type, '') AS old_type,
                   n.event_id AS new_event, n.ticket_serial AS new_serial,
                   COALESCE(n.ticket_type, '') AS new_type
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE (o.event_id, o.ticket_serial, o.ticket_type)
                IS DISTINCT FROM (n.event_id, n.ticket_serial, n.ticket_type)
        )
        SELECT array_agg(x) INTO d FROM (
            SELECT ROW(m.old_event, (pr.hlc >> 16) / 60000, m.old_type,
                       -pr.inside::int, -(pr.entries > 0)::int)::type_presence_delta AS x
            FROM moved m JOIN presence pr ON pr.event_id = m.old_event AND pr.serial = m.old_serial
            WHERE pr.inside OR pr.entries > 0
            UNION ALL
            SELECT ROW(m.new_event, (pr.hlc >> 16) / 60000, m.new_type,
                       pr.inside::int, (pr.entries > 0)::int)::type_presence_delta
            FROM moved m JOIN presence pr ON pr.event_id = m.new_event AND pr.serial = m.new_serial
            WHERE pr.inside OR pr.entries > 0
        ) c;
    END IF;
    IF d IS NOT NULL THEN
        PERFORM type_presence_apply(d);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER participants_presence_insert AFTER INSERT ON participants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION participant_presence_counters();
CREATE TRIGGER participants_presence_update AFTER UPDATE ON participants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION participant_presence_counters();
CREATE TRIGGER participants_presence_delete AFTER DELETE ON participants
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION participant_presence_counters();

-- ------------------------------------------------------------------ what is already there

SELECT gate_presence_apply(array_agg(gate_presence_of(p.event_id, p.serial, p.hlc, p.last_gate,
                                p.inside, p.entries, 1)))
FROM presence p WHERE p.inside OR p.entries > 0
HAVING count(*) > 0;
