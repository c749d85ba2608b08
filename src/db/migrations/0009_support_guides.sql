-- Schema 9: support guides HQ sends through the feed (guide.upsert / guide.delete), shown to staff
-- next to a matching device alert or ticket category; tickets get the category staff picked.
CREATE TABLE guides (
    id                TEXT PRIMARY KEY,
    title             TEXT NOT NULL,
    body              TEXT NOT NULL,
    -- JSON arrays of strings, as HQ sent them.
    alert_codes       TEXT NOT NULL,
    ticket_categories TEXT NOT NULL,
    updated_ms        INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE tickets ADD COLUMN category TEXT NOT NULL DEFAULT 'other';
