-- Door operations: who the ticket belongs to beyond the name (search results, badges, the day
-- rules of its type), and entries per event-local day in the presence view (daily limits).
ALTER TABLE tickets ADD COLUMN ticket_type TEXT;
ALTER TABLE tickets ADD COLUMN organization TEXT;
ALTER TABLE presence ADD COLUMN day INTEGER NOT NULL DEFAULT 0;
ALTER TABLE presence ADD COLUMN day_entries INTEGER NOT NULL DEFAULT 0;
