-- Who asked for each sign-in link (a caller's name from the callers file), so the callback's
-- audit line can name them.
ALTER TABLE pending_authorizations ADD COLUMN requested_by TEXT;
