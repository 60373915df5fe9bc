-- What the server keeps about itself: the check value of the master key its data is sealed
-- with (a start with another key is refused).
CREATE TABLE server_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Retry-safe enrollment: who used a code, the credential it issued, and when it was retried
-- (a device whose answer was lost may use its code once more, shortly after).
ALTER TABLE enrollment_codes ADD COLUMN device_name TEXT;
ALTER TABLE enrollment_codes ADD COLUMN token_hash BLOB;
ALTER TABLE enrollment_codes ADD COLUMN retried_at BIGINT;
