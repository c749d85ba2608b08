-- Schema 4: support tickets opened at the store, and the replies HQ sends back (ticket.update).
CREATE TABLE tickets (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    description TEXT NOT NULL,
    device_id   TEXT,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    opened_ms   INTEGER NOT NULL,
    opened_by   TEXT NOT NULL,
    diagnostics TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tickets_opened ON tickets(opened_ms);

CREATE TABLE ticket_replies (
    id        INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    -- The HQ event id that carried the reply: applying the same event twice adds nothing.
    event_id  TEXT NOT NULL UNIQUE,
    at_ms     INTEGER NOT NULL,
    author    TEXT NOT NULL,
    message   TEXT NOT NULL,
    status    TEXT
);
CREATE INDEX ticket_replies_ticket ON ticket_replies(ticket_id, id);
