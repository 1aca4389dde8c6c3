-- The admin page: sign-ins with Microsoft in progress and signed-in sessions, shared by
-- replicas (a browser may land on any). Only hashes of the secrets the browser holds are kept.
CREATE TABLE admin_sign_ins (
    state_hash    TEXT PRIMARY KEY,
    -- Hash of the cookie the browser got when it started: the sign-in ends in that browser.
    browser_hash  TEXT NOT NULL,
    pkce_verifier BLOB NOT NULL,
    nonce_hash    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);

CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    -- Who signed in, as the audit log names them.
    admin      TEXT NOT NULL,
    -- How they got in (JSON), checked again on every request: an administrator taken off
    -- GRAPH_MAILER_ADMINS or the callers file loses their sessions.
    entry      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
