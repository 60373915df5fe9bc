-- The ticket shop's own barcodes (an Eventbrite "Barcode #", a pretix ticket secret, a plain
-- "barcode" column of an import) as extra credentials of a ticket. Only the keyed lookup key is
-- kept (sync_protocol::barcode), never the barcode text; it is replicated to the gates.
CREATE TABLE ticket_barcodes (
    event_id    UUID NOT NULL,
    barcode_key TEXT NOT NULL,
    serial      BIGINT NOT NULL,
    PRIMARY KEY (event_id, barcode_key)
);
CREATE INDEX ticket_barcodes_serial ON ticket_barcodes (event_id, serial);
