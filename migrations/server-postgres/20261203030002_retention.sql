-- Retention of personal data (docs/lifecycle.md): an organizer sets how many days after it is
-- archived an event keeps its participants' personal data; a background task in every server
-- process then erases it (counts, tickets and check-ins stay, so the report still works).
-- retention_days NULL: kept until erased by hand. archived_at: when the event was archived (unix
-- ms). purged_at: when its personal data was erased (set once; the purge's claim).
ALTER TABLE events ADD COLUMN retention_days BIGINT;
ALTER TABLE events ADD COLUMN archived_at BIGINT;
ALTER TABLE events ADD COLUMN purged_at BIGINT;
UPDATE events SET archived_at = updated_at WHERE status = 'archived';
