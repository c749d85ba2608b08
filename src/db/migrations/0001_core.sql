-- Schema 1: identities, audit and the outbox.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('staff', 'manager', 'admin')),
    created_ms    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_tokens (
    name        TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('staff', 'manager', 'admin')),
    created_ms  INTEGER NOT NULL,
    last_used_ms INTEGER
) WITHOUT ROWID;

CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL DEFAULT 'generic',
    name        TEXT NOT NULL DEFAULT '',
    secret_hash TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL DEFAULT '',
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit(at_ms);

-- Store -> HQ events, each written here first (see docs/sync-protocol.md).
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    class      TEXT NOT NULL CHECK (class IN ('business', 'telemetry')),
    payload    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms    INTEGER
);
CREATE INDEX outbox_unsent ON outbox(class, seq) WHERE sent_ms IS NULL;
