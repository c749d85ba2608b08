-- Reference HQ schema 1 (its own database file, not the store's).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE stores (
    id               TEXT PRIMARY KEY,
    grp              TEXT NOT NULL DEFAULT '',
    token_hash       TEXT NOT NULL UNIQUE,
    created_ms       INTEGER NOT NULL,
    last_seen_ms     INTEGER,
    version          TEXT,
    cursor           INTEGER,
    lag_events       INTEGER,
    lag_seconds      REAL,
    outbox_business  INTEGER,
    outbox_telemetry INTEGER,
    outbox_dropped   INTEGER,
    rollup           TEXT,
    rollup_ms        INTEGER
) WITHOUT ROWID;

-- The log of authored HQ events: the feed. `all_stores` or rows in hq_event_targets say who gets it.
CREATE TABLE hq_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    all_stores INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE hq_event_targets (
    seq  INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('group', 'store')),
    name TEXT NOT NULL,
    PRIMARY KEY (seq, kind, name)
) WITHOUT ROWID;
CREATE INDEX hq_event_targets_name ON hq_event_targets(kind, name, seq);

-- Current catalog state per key and target, for snapshots (survives feed retention).
CREATE TABLE hq_state (
    key    TEXT NOT NULL,
    kind   TEXT NOT NULL CHECK (kind IN ('all', 'group', 'store')),
    name   TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    type   TEXT NOT NULL,
    payload TEXT NOT NULL,
    live   INTEGER NOT NULL,
    PRIMARY KEY (key, kind, name)
) WITHOUT ROWID;

-- Events received from stores, idempotent on (store, seq); rowid = arrival order.
CREATE TABLE store_events (
    rid         INTEGER PRIMARY KEY,
    store_id    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT NOT NULL,
    type        TEXT NOT NULL,
    class       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    at          TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    UNIQUE (store_id, seq)
);
CREATE INDEX store_events_type ON store_events(type, received_ms);
CREATE INDEX store_events_received ON store_events(received_ms);

CREATE TABLE tickets (
    id         TEXT PRIMARY KEY,
    store_id   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    payload    TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'open',
    opened_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE ticket_replies (
    id        INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    author    TEXT NOT NULL,
    message   TEXT NOT NULL,
    status    TEXT,
    at_ms     INTEGER NOT NULL
);
