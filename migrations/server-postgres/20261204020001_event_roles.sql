-- Roles per event. A user's role on an event is the higher of their role on all events
-- (`users.role`, unless `users.events_only`) and their grant on that event here.
-- `session_epoch` is carried in every bearer token and bumped by any change to the user (role,
-- grant, disabling, password), so a changed user's tokens stop working on their next request.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
-- TRUE: the user has no role on all events (`role` is then ignored), only the grants below.
ALTER TABLE users ADD COLUMN events_only BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE user_event_roles (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event_id   UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'staff', 'viewer')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX user_event_roles_event ON user_event_roles (event_id);
