-- Console fleet view and store story (docs/hq.md): what a store's report says about its devices,
-- alerts and time zone; its outbox depth at the report before (for "backlog growing"); indexes to
-- read one store's events by time and by type; and when the store says each event happened (`at`
-- as milliseconds; HQ's arrival time for events from before this migration or with an unreadable
-- `at`), which is the time a store's story is told in.
ALTER TABLE stores ADD COLUMN devices_total BIGINT;
ALTER TABLE stores ADD COLUMN devices_offline BIGINT;
ALTER TABLE stores ADD COLUMN open_alerts BIGINT;
ALTER TABLE stores ADD COLUMN open_alerts_warning BIGINT;
ALTER TABLE stores ADD COLUMN timezone TEXT;
ALTER TABLE stores ADD COLUMN outbox_prev BIGINT;
CREATE INDEX store_events_store_type ON store_events (store_id, type, received_ms);
CREATE INDEX hq_events_created ON hq_events (created_ms);
ALTER TABLE store_events ADD COLUMN at_ms BIGINT;
UPDATE store_events SET at_ms = received_ms;
CREATE INDEX store_events_store_at ON store_events (store_id, at_ms);
