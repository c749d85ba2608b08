-- Release registry and rollouts (docs/releases.md). Package bytes are files
-- `releases/<sha256>.deb` next to hq.db; only their metadata is here.
CREATE TABLE releases (
    version     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    serial      INTEGER NOT NULL,
    channel     TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    uploaded_ms INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE rollouts (
    id         TEXT PRIMARY KEY,
    version    TEXT NOT NULL REFERENCES releases (version),
    plan       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('running', 'paused', 'aborted', 'completed')),
    reason     TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX rollouts_created ON rollouts (created_ms);

-- One row per store a rollout assigned: what it last reported.
CREATE TABLE rollout_stores (
    rollout_id  TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    wave        INTEGER NOT NULL,
    version     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    reason      TEXT NOT NULL DEFAULT '',
    assigned_ms INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, store_id)
) WITHOUT ROWID;
CREATE INDEX rollout_stores_store ON rollout_stores (store_id, rollout_id);
