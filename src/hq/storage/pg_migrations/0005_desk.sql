-- The support desk: each ticket's category (from ticket.opened), the team routing gave it and its
-- assignee; every desk change (who, when); routing rules and teams.
ALTER TABLE tickets ADD COLUMN category TEXT NOT NULL DEFAULT 'other';
ALTER TABLE tickets ADD COLUMN team TEXT;
ALTER TABLE tickets ADD COLUMN assignee TEXT;
UPDATE tickets SET category = coalesce(payload::jsonb ->> 'category', 'other');
CREATE INDEX tickets_desk ON tickets (status, opened_ms);

CREATE TABLE ticket_changes (
    id        BIGSERIAL PRIMARY KEY,
    store_id  TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT,
    at_ms     BIGINT NOT NULL
);
CREATE INDEX ticket_changes_ticket ON ticket_changes (store_id, ticket_id, id);

CREATE TABLE desk_routing (
    category TEXT PRIMARY KEY,
    team     TEXT NOT NULL
);

CREATE TABLE desk_teams (
    name        TEXT PRIMARY KEY,
    members     TEXT NOT NULL,
    on_call     TEXT,
    webhook_url TEXT,
    email       TEXT
);

-- Notifications of a team's on-call member about a routed ticket: one row per channel and target,
-- sent by a background task with retries. `claimed_until_ms`: a sender's lease (one sender at a
-- time, on any node).
CREATE TABLE desk_notifications (
    id               BIGSERIAL PRIMARY KEY,
    store_id         TEXT NOT NULL,
    ticket_id        TEXT NOT NULL,
    team             TEXT NOT NULL,
    channel          TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),
    target           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_ms          BIGINT NOT NULL,
    claimed_until_ms BIGINT,
    last_error       TEXT,
    sent_ms          BIGINT,
    created_ms       BIGINT NOT NULL
);
CREATE INDEX desk_notifications_due ON desk_notifications (state, next_ms);
