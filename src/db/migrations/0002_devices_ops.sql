-- Schema 2: device state, durable device events, telemetry, alerts, commands, dead letters.
ALTER TABLE devices ADD COLUMN online INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN firmware TEXT;
ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE devices ADD COLUMN status_json TEXT;
ALTER TABLE devices ADD COLUMN offline_reason TEXT;

CREATE TABLE device_events (
    device_id   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, event_id)
) WITHOUT ROWID;
CREATE INDEX device_events_received ON device_events(received_ms);

CREATE TABLE telemetry (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    metrics   TEXT NOT NULL
);
CREATE INDEX telemetry_device_ts ON telemetry(device_id, ts_ms);

-- Per-minute rollup of each numeric metric, for charts over long ranges.
CREATE TABLE telemetry_minute (
    device_id TEXT NOT NULL,
    metric    TEXT NOT NULL,
    minute    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    sum       REAL NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    PRIMARY KEY (device_id, metric, minute)
) WITHOUT ROWID;

CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT NOT NULL,
    code        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    raised_ms   INTEGER NOT NULL,
    cleared_ms  INTEGER
);
CREATE INDEX alerts_device ON alerts(device_id, raised_ms);
CREATE INDEX alerts_open ON alerts(device_id, code) WHERE cleared_ms IS NULL;

CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    args        TEXT NOT NULL,
    sent_ms     INTEGER NOT NULL,
    sent_by     TEXT NOT NULL,
    acked_ms    INTEGER,
    ok          INTEGER,
    result      TEXT
) WITHOUT ROWID;
CREATE INDEX commands_device ON commands(device_id, sent_ms);

CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY,
    received_ms  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    device_id    TEXT,
    topic        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    payload      BLOB NOT NULL,
    payload_size INTEGER NOT NULL
);
CREATE INDEX dead_letters_device ON dead_letters(device_id, id);
