-- Every merge reads the conflicts of the tickets it re-folds; without this index that read
-- scanned all of the event's conflicts once per push.
CREATE INDEX conflicts_ticket ON conflicts (event_id, ticket_serial);
