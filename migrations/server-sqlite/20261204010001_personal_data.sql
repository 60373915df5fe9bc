-- Personal data at rest (DESIGN §11): participants' name, email, phone, organization, attention
-- and metadata hold AES-256-GCM ciphertext (URL-safe base64, first byte the key version) from
-- now on; `pd_version` is the key version that sealed the row, NULL for a row written before
-- this migration (the server seals those on start, see store::personal::backfill).
-- `email_key` becomes the blind index (hex HMAC) of the normalised e-mail; `phone_key` the one
-- of the phone's digits.
ALTER TABLE participants ADD COLUMN pd_version INTEGER;
ALTER TABLE participants ADD COLUMN phone_key TEXT;
CREATE INDEX participants_phone_key ON participants (event_id, phone_key);

-- Search terms: blind indexes of the words of names and organisations and their prefixes.
-- The primary key answers "who has this term" in participant id order (keyset paging); the
-- second index drops a participant's terms on an update or an erasure.
CREATE TABLE participant_terms (
    event_id        BLOB NOT NULL,
    term            BLOB NOT NULL,
    participant_id  BLOB NOT NULL,
    PRIMARY KEY (event_id, term, participant_id)
) WITHOUT ROWID;
CREATE INDEX participant_terms_participant ON participant_terms (event_id, participant_id);
