-- The outbox (issue 11): queued messages, SendBulk batches, their events, and each mailbox's
-- pacing (the send log its rolling limits are counted from).

CREATE TABLE outbox_batches (
    batch_id     TEXT PRIMARY KEY,
    mailbox      TEXT NOT NULL,
    total        BIGINT NOT NULL,
    -- The encoded SendMailRequest every message is rendered from; NULL once all are finished.
    template     BLOB,
    idem_key     TEXT,
    request_hash TEXT NOT NULL,
    caller       TEXT NOT NULL,
    accepted_at  BIGINT NOT NULL,
    UNIQUE (mailbox, idem_key)
);

CREATE TABLE outbox_messages (
    message_id       TEXT PRIMARY KEY,
    mailbox          TEXT NOT NULL,
    batch_id         TEXT,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    recipients       BIGINT NOT NULL,
    external         BIGINT NOT NULL,
    upload_bytes     BIGINT NOT NULL,
    requests         BIGINT NOT NULL,
    -- The message's size: what sending it holds in memory (the workers' byte budget).
    size_bytes       BIGINT NOT NULL,
    accepted_at      BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    sending_since    BIGINT,
    sent_at          BIGINT,
    finished_at      BIGINT,
    last_error       TEXT,
    graph_request_id TEXT,
    lease_holder     TEXT,
    lease_until      BIGINT,
    idem_key         TEXT,
    request_hash     TEXT NOT NULL,
    caller           TEXT NOT NULL,
    -- QueueMail: the encoded SendMailRequest. SendBulk: the recipient and its variables (the
    -- template is the batch's). NULL once the message is finished.
    body             BLOB,
    UNIQUE (mailbox, idem_key)
);
CREATE INDEX outbox_messages_due ON outbox_messages (state, next_attempt_at);
CREATE INDEX outbox_messages_by_mailbox ON outbox_messages (mailbox, state, next_attempt_at);
CREATE INDEX outbox_messages_by_batch ON outbox_messages (batch_id);
CREATE INDEX outbox_messages_by_age ON outbox_messages (accepted_at);

CREATE TABLE outbox_events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL,
    mailbox          TEXT NOT NULL,
    batch_id         TEXT,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    recipients       BIGINT NOT NULL,
    accepted_at      BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    sent_at          BIGINT,
    last_error       TEXT,
    graph_request_id TEXT,
    at               BIGINT NOT NULL
);
CREATE INDEX outbox_events_by_time ON outbox_events (at);

-- Each mailbox's next free send slot and pause, one row per mailbox; `queue_end` is when the
-- last message queued is expected to go (for QueueMail's estimate without counting the queue).
CREATE TABLE mailbox_pacing (
    mailbox      TEXT PRIMARY KEY,
    next_send_at BIGINT NOT NULL,
    paused_until BIGINT,
    pause_reason TEXT,
    queue_end    BIGINT NOT NULL DEFAULT 0
);

-- What each mailbox sent (or has reserved to send), for the rolling limits.
CREATE TABLE mailbox_usage (
    mailbox      TEXT NOT NULL,
    at           BIGINT NOT NULL,
    recipients   BIGINT NOT NULL,
    external     BIGINT NOT NULL,
    requests     BIGINT NOT NULL,
    upload_bytes BIGINT NOT NULL
);
CREATE INDEX mailbox_usage_by_mailbox ON mailbox_usage (mailbox, at);
