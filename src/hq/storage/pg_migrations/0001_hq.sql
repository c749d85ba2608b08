-- storebox reference HQ on PostgreSQL, schema 1. The same data as the SQLite engine; payloads are
-- TEXT so that what a store sent is kept byte for byte.
CREATE TABLE hq_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
-- 'head': the feed's counter row. A publishing transaction takes its seqs by updating it, which
-- locks the row until commit: publishers are serialized, so seqs become visible in order and a
-- store that has read up to `head` can never miss an event below it.
INSERT INTO hq_meta (key, value) VALUES ('head', 0), ('pruned_through', 0);

CREATE TABLE stores (
    id               TEXT PRIMARY KEY,
    grp              TEXT NOT NULL DEFAULT '',
    token_hash       TEXT NOT NULL UNIQUE,
    created_ms       BIGINT NOT NULL,
    last_seen_ms     BIGINT,
    version          TEXT,
    cursor           BIGINT,
    lag_events       BIGINT,
    lag_seconds      DOUBLE PRECISION,
    outbox_business  BIGINT,
    outbox_telemetry BIGINT,
    outbox_dropped   BIGINT,
    rollup           TEXT,
    rollup_ms        BIGINT
);

CREATE TABLE hq_events (
    seq        BIGINT PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    all_stores BOOLEAN NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE hq_event_targets (
    seq  BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('group', 'store')),
    name TEXT NOT NULL,
    PRIMARY KEY (seq, kind, name)
);
CREATE INDEX hq_event_targets_name ON hq_event_targets (kind, name, seq);

CREATE TABLE hq_state (
    key     TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('all', 'group', 'store')),
    name    TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    type    TEXT NOT NULL,
    payload TEXT NOT NULL,
    live    BOOLEAN NOT NULL,
    PRIMARY KEY (key, kind, name)
);

-- Events received from stores, idempotent on (store, seq); rid = arrival order.
CREATE TABLE store_events (
    rid         BIGSERIAL PRIMARY KEY,
    store_id    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    id          TEXT NOT NULL,
    type        TEXT NOT NULL,
    class       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    at          TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    UNIQUE (store_id, seq)
);
CREATE INDEX store_events_type ON store_events (type, received_ms);
CREATE INDEX store_events_received ON store_events (received_ms);

CREATE TABLE tickets (
    id        TEXT NOT NULL,
    store_id  TEXT NOT NULL,
    subject   TEXT NOT NULL,
    payload   TEXT NOT NULL,
    status    TEXT NOT NULL DEFAULT 'open',
    opened_ms BIGINT NOT NULL,
    PRIMARY KEY (store_id, id)
);
CREATE INDEX tickets_opened ON tickets (opened_ms);
CREATE TABLE ticket_replies (
    id        BIGSERIAL PRIMARY KEY,
    store_id  TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    author    TEXT NOT NULL,
    message   TEXT NOT NULL,
    status    TEXT,
    at_ms     BIGINT NOT NULL
);
CREATE INDEX ticket_replies_ticket ON ticket_replies (store_id, ticket_id, id);
