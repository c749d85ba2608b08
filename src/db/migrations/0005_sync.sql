-- Schema 5: the HQ feed side of sync (docs/sync-protocol.md). The feed cursor lives in `meta`
-- (`sync_cursor`), written in the same transaction as the batch it ends.

-- HQ events that failed validation at the store: kept with the reason, reported to HQ.
CREATE TABLE sync_quarantine (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL,
    event_id    TEXT,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);

-- Releases HQ assigned to this store (applied by the updates module in a later version).
CREATE TABLE sync_releases (
    event_id    TEXT PRIMARY KEY,
    payload     TEXT NOT NULL,
    received_ms INTEGER NOT NULL
) WITHOUT ROWID;
