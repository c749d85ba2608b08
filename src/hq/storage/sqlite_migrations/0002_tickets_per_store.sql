-- Ticket ids are chosen by stores: key tickets by (store, id) so that one store cannot shadow
-- another's ticket.
CREATE TABLE tickets_new (
    id         TEXT NOT NULL,
    store_id   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    payload    TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'open',
    opened_ms  INTEGER NOT NULL,
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;
INSERT INTO tickets_new (id, store_id, subject, payload, status, opened_ms)
    SELECT id, store_id, subject, payload, status, opened_ms FROM tickets;
DROP TABLE tickets;
ALTER TABLE tickets_new RENAME TO tickets;
CREATE INDEX tickets_opened ON tickets(opened_ms);
ALTER TABLE ticket_replies ADD COLUMN store_id TEXT NOT NULL DEFAULT '';
UPDATE ticket_replies SET store_id = coalesce(
    (SELECT store_id FROM tickets t WHERE t.id = ticket_replies.ticket_id), '');
CREATE INDEX ticket_replies_ticket ON ticket_replies(store_id, ticket_id, id);
