-- Release registry and rollouts (docs/releases.md). Package bytes are
-- rows of `release_chunks` (1 MiB each), so that every HQ node can serve them.
CREATE TABLE releases (
    version     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    serial      BIGINT NOT NULL,
    channel     TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    uploaded_ms BIGINT NOT NULL,
    uploaded_by TEXT NOT NULL
);

CREATE TABLE rollouts (
    id         TEXT PRIMARY KEY,
    version    TEXT NOT NULL REFERENCES releases (version),
    plan       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('running', 'paused', 'aborted', 'completed')),
    reason     TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX rollouts_created ON rollouts (created_ms);

-- One row per store a rollout assigned: what it last reported.
CREATE TABLE rollout_stores (
    rollout_id  TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    wave        BIGINT NOT NULL,
    version     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    reason      TEXT NOT NULL DEFAULT '',
    assigned_ms BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, store_id)
);
CREATE INDEX rollout_stores_store ON rollout_stores (store_id, rollout_id);

-- Package bytes, keyed by content: chunk `idx` holds bytes [idx × 1 MiB, (idx + 1) × 1 MiB).
CREATE TABLE release_chunks (
    sha256 TEXT NOT NULL,
    idx    BIGINT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (sha256, idx)
);
