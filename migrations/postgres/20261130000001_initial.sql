-- graph-mailer's store. Times are Unix milliseconds (BIGINT) so one SQL text serves SQLite and
-- PostgreSQL through sqlx's Any driver; secrets (tokens, PKCE verifiers) are AES-256-GCM
-- ciphertexts.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE mailboxes (
    mailbox                 TEXT PRIMARY KEY,
    state                   TEXT NOT NULL DEFAULT 'not_connected',
    account                 TEXT,
    object_id               TEXT,
    tenant_id               TEXT,
    scopes                  TEXT NOT NULL DEFAULT '',
    access_token            BYTEA,
    access_token_expires_at BIGINT,
    refresh_token           BYTEA,
    connected_at            BIGINT,
    last_refreshed_at       BIGINT,
    last_sent_at            BIGINT,
    last_error              TEXT,
    last_error_source       TEXT,
    sent_total              BIGINT NOT NULL DEFAULT 0,
    failed_total            BIGINT NOT NULL DEFAULT 0,
    token_generation        BIGINT NOT NULL DEFAULT 0,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE pending_authorizations (
    state_hash    TEXT PRIMARY KEY,
    mailbox       TEXT NOT NULL,
    pkce_verifier BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX pending_authorizations_by_mailbox ON pending_authorizations (mailbox);

CREATE TABLE idempotency_keys (
    mailbox      TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    accepted_at  BIGINT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (mailbox, idem_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
