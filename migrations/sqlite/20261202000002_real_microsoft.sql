-- What Microsoft 365 needs beyond the first release (issue 10).

-- The address mail goes out from (the account's primary SMTP address, read from Graph's /me at
-- Connect), and until when Exchange has stopped the mailbox sending, with its reason.
ALTER TABLE mailboxes ADD COLUMN sending_address TEXT;
ALTER TABLE mailboxes ADD COLUMN paused_until BIGINT;
ALTER TABLE mailboxes ADD COLUMN pause_reason TEXT;

-- The lease on a mailbox's tokens: whoever refreshes (or connects, or disconnects) holds it
-- for a bounded time instead of a transaction held across Microsoft's token call.
ALTER TABLE mailboxes ADD COLUMN token_lease_holder TEXT;
ALTER TABLE mailboxes ADD COLUMN token_lease_until BIGINT;

-- Outlook allows four concurrent requests per mailbox across every client of the app: each
-- request in flight holds one of these slots, with an expiry in case its holder dies.
CREATE TABLE mailbox_slots (
    mailbox    TEXT NOT NULL,
    slot       BIGINT NOT NULL,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (mailbox, slot)
);
