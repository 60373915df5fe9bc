-- The merge path writes a check-in row and a presence row for every scan a gate pushes. Their
-- foreign keys cost one `SELECT … FOR KEY SHARE` per row per key (a third of the database's CPU
-- in a batched merge), and the rows are only ever written by code that has just authenticated
-- the gate of that event. Like `participants`, `tickets` and `changes`, these tables now go
-- without foreign keys; deleting an event removes them explicitly (store::events::delete).
ALTER TABLE checkins DROP CONSTRAINT IF EXISTS checkins_event_id_fkey;
ALTER TABLE checkins DROP CONSTRAINT IF EXISTS checkins_gate_id_fkey;
ALTER TABLE presence DROP CONSTRAINT IF EXISTS presence_event_id_fkey;
-- Never read: the organizer's check-in list pages by id.
DROP INDEX IF EXISTS checkins_event;
