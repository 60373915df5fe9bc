-- Sync bookkeeping (DESIGN §4).
-- The highest seq such that every check-in 1..=seq of the gate is stored: what a push
-- acknowledges. Advanced under the gate row lock by each push.
ALTER TABLE gates ADD COLUMN acked_seq INTEGER NOT NULL DEFAULT 0;
-- A check-in acknowledged as `invalid` keeps its seq (so the gate's log has no hole) but takes
-- no part in the merge; this says why it was refused.
ALTER TABLE checkins ADD COLUMN invalid TEXT;
