-- HQ staff who sign in to the console, and their sessions (kept in the database so that any HQ
-- node can serve any signed-in request).
CREATE TABLE hq_users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'support')),
    password_hash TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);
CREATE TABLE hq_sessions (
    id_hash    TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
