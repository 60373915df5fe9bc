-- The ticket shop's barcodes (an Eventbrite "Barcode #", a pretix ticket secret) by their
-- keyed lookup key (sync_protocol::barcode): the barcode text itself is never stored here.
CREATE TABLE barcodes (
    key    TEXT PRIMARY KEY,
    serial INTEGER NOT NULL
) STRICT;
