-- Schema 10: the store's self-update (docs/releases.md, "The store"). The updater's state is one
-- row (JSON of `updates::service::Persisted`), its state changes a bounded history; the feed's
-- `release.assign` rows get the time the updater took them.

CREATE TABLE updates_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    data        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE updates_history (
    id       INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    version  TEXT NOT NULL,
    serial   INTEGER,
    rollout  TEXT,
    state    TEXT NOT NULL,
    reason   TEXT NOT NULL
);

ALTER TABLE sync_releases ADD COLUMN handled_ms INTEGER;
