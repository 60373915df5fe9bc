-- Never read: the organizer's check-in list pages by id. (The PostgreSQL schema also drops the
-- foreign keys of checkins and presence here; SQLite checks them at no measurable cost, and
-- store::events::delete removes those rows explicitly on both backends.)
DROP INDEX IF EXISTS checkins_event;
