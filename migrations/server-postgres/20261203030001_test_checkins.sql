-- Check-ins stored while their event is a draft are tests (the organizer trying the gates):
-- kept and listed with `is_test`, but never folded into presence or conflicts and never counted
-- in attendance, the dashboard or the report; counting starts from zero when the event goes live.
ALTER TABLE checkins ADD COLUMN is_test BOOLEAN NOT NULL DEFAULT false;
