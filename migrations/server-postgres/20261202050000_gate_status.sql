-- What each gate reports on every pull and push (agent version, outbox depth, last sync), and
-- when the server last heard from it. Written at most every few seconds per gate.
ALTER TABLE gates ADD COLUMN last_seen_at BIGINT;
ALTER TABLE gates ADD COLUMN agent_version TEXT;
ALTER TABLE gates ADD COLUMN outbox_depth BIGINT;
ALTER TABLE gates ADD COLUMN last_sync_at BIGINT;
